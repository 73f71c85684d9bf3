"""Vocabulary of the demo data: lookup rows, names, and how often each value occurs."""

from __future__ import annotations

import unicodedata
from decimal import Decimal
from typing import Final

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
