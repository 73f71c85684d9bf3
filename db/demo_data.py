"""The demo data: lookup rows, names, how often each value occurs, and the row generator."""

from __future__ import annotations

import datetime as dt
import random
import unicodedata
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

BATCH: Final = 20_000  # members per batch: big enough to amortise, small enough to stream
YEARS_OF_HISTORY: Final = 6
DAY: Final = 86_400

# (code, name, monthly fee, rank, share of members)
TIERS: Final = (
    ("bronze", "Bronze", Decimal("9.99"), 1, 45),
    ("silver", "Silver", Decimal("19.99"), 2, 30),
    ("gold", "Gold", Decimal("39.99"), 3, 18),
    ("platinum", "Platinum", Decimal("79.99"), 4, 7),
)

# (code, name, share of members). Lapsed and cancelled members are the churn of the dashboard.
STATUSES: Final = (
    ("active", "Active", 70),
    ("lapsed", "Lapsed", 15),
    ("cancelled", "Cancelled", 10),
    ("suspended", "Suspended", 5),
)
CHURNED_STATUSES: Final = frozenset({"lapsed", "cancelled"})

# (ISO code, name, relative weight): a club with an English-speaking core and members abroad.
COUNTRIES: Final = (
    ("US", "United States", 220),
    ("GB", "United Kingdom", 120),
    ("CA", "Canada", 70),
    ("AU", "Australia", 55),
    ("DE", "Germany", 60),
    ("FR", "France", 45),
    ("IE", "Ireland", 25),
    ("NL", "Netherlands", 25),
    ("ES", "Spain", 30),
    ("IT", "Italy", 30),
    ("SE", "Sweden", 15),
    ("NO", "Norway", 10),
    ("DK", "Denmark", 10),
    ("FI", "Finland", 8),
    ("PL", "Poland", 18),
    ("PT", "Portugal", 10),
    ("BE", "Belgium", 12),
    ("CH", "Switzerland", 12),
    ("AT", "Austria", 10),
    ("NZ", "New Zealand", 15),
    ("JP", "Japan", 20),
    ("KR", "South Korea", 10),
    ("SG", "Singapore", 8),
    ("IN", "India", 30),
    ("BR", "Brazil", 20),
    ("MX", "Mexico", 18),
    ("AR", "Argentina", 8),
    ("ZA", "South Africa", 10),
    ("NG", "Nigeria", 8),
    ("KE", "Kenya", 5),
    ("IL", "Israel", 6),
    ("AE", "United Arab Emirates", 6),
)

FIRST_NAMES: Final = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "William",
    "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah",
    "Charles", "Karen", "Daniel", "Nancy", "Matthew", "Lisa", "Anthony", "Margaret", "Mark",
    "Sandra", "Paul", "Ashley", "Steven", "Emily", "Andrew", "Donna", "Joshua", "Michelle",
    "Kevin", "Carol", "Brian", "Amanda", "George", "Melissa", "Edward", "Deborah", "Oliver",
    "Olivia", "Harry", "Amelia", "Jack", "Isla", "Noah", "Ava", "Liam", "Mia", "Lucas", "Emma",
    "Leon", "Hannah", "Lukas", "Lena", "Felix", "Anna", "Hugo", "Chloé", "Louis", "Léa",
    "Mateo", "Sofía", "Alejandro", "Lucía", "Marco", "Giulia", "Luca", "Francesca", "Lars",
    "Ingrid", "Erik", "Astrid", "Jakub", "Zofia", "João", "Beatriz", "Hiroshi", "Yuki",
    "Min-jun", "Seo-yeon", "Arjun", "Priya", "Rahul", "Ananya", "Chinedu", "Ngozi", "Wanjiru",
    "Kwame", "Thandiwe", "Sipho", "Noa", "Yael", "Omar", "Layla", "Siobhán", "Conor",
    "Aoife", "Rangi", "Aroha", "Wei", "Mei", "Diego", "Valentina", "Santiago", "Camila",
)  # fmt: skip

LAST_NAMES: Final = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Wilson", "Anderson", "Taylor", "Thomas", "Moore", "Jackson", "Martin", "Lee",
    "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen",
    "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill", "Campbell",
    "Mitchell", "Roberts", "Carter", "Phillips", "Evans", "Turner", "Parker", "Collins",
    "Edwards", "Stewart", "Morris", "Murphy", "O'Brien", "Kelly", "Walsh", "Byrne", "Müller",
    "Schmidt", "Schneider", "Fischer", "Weber", "Becker", "Dubois", "Moreau", "Lefèvre",
    "Laurent", "Fernández", "López", "González", "Pérez", "Rossi", "Russo", "Ferrari",
    "Esposito", "Bianchi", "Andersson", "Johansson", "Karlsson", "Nielsen", "Hansen",
    "Jensen", "Kowalski", "Nowak", "Wiśniewski", "Silva", "Santos", "Oliveira", "Sato",
    "Suzuki", "Takahashi", "Kim", "Park", "Choi", "Patel", "Sharma", "Singh", "Gupta",
    "Okafor", "Adeyemi", "Mwangi", "Otieno", "Mensah", "Dlamini", "Nkosi", "Cohen", "Levi",
    "Haddad", "Nguyen", "Tran", "Wang", "Li", "Zhang", "Chen", "Ng", "Tan", "Van der Berg",
    "De Vries", "Jansen", "Novak", "Horvat", "Costa", "Ramos", "Torres", "Flores",
)  # fmt: skip

# Reserved for documentation (RFC 2606/6761): demo addresses can never reach a real inbox.
EMAIL_DOMAINS: Final = ("example.com", "example.org", "example.net", "mail.example")

EVENT_PRICES: Final = ("12.00", "15.00", "25.00", "35.00", "49.50", "75.00", "120.00")

# How many payments a member has; the weights average three.
PAYMENT_COUNTS: Final = (0, 1, 2, 3, 4, 5, 6)
PAYMENT_COUNT_WEIGHTS: Final = (4, 12, 20, 28, 18, 10, 8)
EVENT_SHARE: Final = 0.2  # the rest are dues


def email_slug(name: str) -> str:
    """The ASCII, lower-case form of a name for an email local part: "Lefèvre" -> "lefevre"."""
    ascii_form = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in ascii_form.lower() if ch.isalnum())


@dataclass
class MemberBatch:
    ids: range
    emails: list[str]
    first: list[str]
    last: list[str]
    status: list[str]
    tier: list[str]
    country: list[str]
    birth: list[int]  # proleptic ordinals
    joined: list[int]  # epoch seconds
    updated: list[int]
    version: list[int]


@dataclass
class PaymentBatch:
    ids: list[int]
    member_id: list[int]
    amount: list[str]
    paid: list[int]
    kind: list[str]


class DemoRows:
    """Deterministic rows for one seed, in batches: first members, then their payments.

    Values stay raw (ordinals, epoch seconds) so each loader renders them its own way.
    """

    def __init__(self, members: int, seed: int, now: dt.datetime) -> None:
        self.count = members
        self.rng = random.Random(seed)
        self.now = int(now.timestamp())
        self.start = self.now - YEARS_OF_HISTORY * 365 * DAY
        # Per member, kept compactly for the payments pass.
        self._joined = array("q")
        self._end = array("q")
        self._tier = array("b")
        self._slugs = {n: email_slug(n) for n in FIRST_NAMES + LAST_NAMES}

    def members(self) -> Iterator[MemberBatch]:
        rng, now, start, span = self.rng, self.now, self.start, self.now - self.start
        tiers, tier_weights = [t[0] for t in TIERS], [t[4] for t in TIERS]
        statuses, status_weights = [s[0] for s in STATUSES], [s[2] for s in STATUSES]
        countries = [c[0] for c in COUNTRIES]
        country_weights = [c[2] for c in COUNTRIES]
        tier_index = {code: i for i, code in enumerate(tiers)}
        churned = CHURNED_STATUSES
        birth_lo = dt.date(1940, 1, 1).toordinal()
        birth_hi = dt.date(2008, 12, 31).toordinal()
        birth_mode = dt.date(1978, 1, 1).toordinal()
        triangular, slug = rng.triangular, self._slugs
        for first_id in range(1, self.count + 1, BATCH):
            ids = range(first_id, min(first_id + BATCH, self.count + 1))
            n = len(ids)
            first = rng.choices(FIRST_NAMES, k=n)
            last = rng.choices(LAST_NAMES, k=n)
            domains = rng.choices(EMAIL_DOMAINS, k=n)
            status = rng.choices(statuses, status_weights, k=n)
            tier = rng.choices(tiers, tier_weights, k=n)
            country = rng.choices(countries, country_weights, k=n)
            emails, birth, joined, updated, version = [], [], [], [], []
            for i in range(n):
                f, la, member_id = slug[first[i]], slug[last[i]], ids[i]
                # The id suffix makes every address unique; the patterns only vary the look.
                style = member_id % 3
                local = f"{f}.{la}" if style == 0 else f"{f[0]}{la}" if style == 1 else f"{f}_{la}"
                emails.append(f"{local}{member_id}@{domains[i]}")
                birth.append(int(triangular(birth_lo, birth_hi, birth_mode)))
                # sqrt skews joins towards now: the club has been growing.
                joined_at = start + int(span * rng.random() ** 0.5)
                if status[i] in churned or rng.random() < 0.3:
                    # For churned members the last update is when they left (the churn month).
                    updated_at = joined_at + int((now - joined_at) * rng.random())
                    version.append(rng.randint(2, 5))
                else:
                    updated_at = joined_at
                    version.append(1)
                joined.append(joined_at)
                updated.append(updated_at)
                self._joined.append(joined_at)
                # A churned member's payments stop when they left.
                self._end.append(updated_at if status[i] in churned else now)
                self._tier.append(tier_index[tier[i]])
            yield MemberBatch(
                ids, emails, first, last, status, tier, country, birth, joined, updated, version
            )

    def payments(self) -> Iterator[PaymentBatch]:
        rng = self.rng
        fees = [str(t[2]) for t in TIERS]
        events, event_share = EVENT_PRICES, EVENT_SHARE
        next_id = 1
        for first in range(0, self.count, BATCH):
            last = min(first + BATCH, self.count)
            counts = rng.choices(PAYMENT_COUNTS, PAYMENT_COUNT_WEIGHTS, k=last - first)
            batch = PaymentBatch([], [], [], [], [])
            for offset, k in enumerate(counts):
                index = first + offset
                begin, window = self._joined[index], self._end[index] - self._joined[index]
                for _ in range(k):
                    batch.ids.append(next_id)
                    next_id += 1
                    batch.member_id.append(index + 1)
                    batch.paid.append(begin + int(window * rng.random()))
                    if rng.random() < event_share:
                        batch.kind.append("event")
                        batch.amount.append(rng.choice(events))
                    else:
                        batch.kind.append("dues")
                        batch.amount.append(fees[self._tier[index]])
            yield batch
