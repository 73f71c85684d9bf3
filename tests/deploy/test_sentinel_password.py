"""The rendered Sentinels' password (REDIS_SENTINEL_PASSWORD, their default user) rotated as
`cachectl rotate sentinel default` does: the old password is in no sentinel.conf afterwards,
and a restarted Sentinel takes only the new one and is seen by its peers again."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from redis.sentinel import Sentinel

from cachectl.rotate import can_login, node_from_url
from cachectl.rotate_sentinel import rotate_sentinel_password
from tests.deploy.app_stack import sentinel_cluster, sentinel_ready
from tests.deploy.conftest import MASTER_NAME, Deployment
from tests.support.redis_procs import wait_for

pytestmark = pytest.mark.slow


def test_a_rotation_leaves_no_old_password_in_sentinel_conf(
    make_deployment: Callable[..., Deployment],
) -> None:
    with sentinel_cluster(make_deployment()) as cluster:
        deployment, sentinels = cluster.deployment, cluster.sentinels
        old, new = deployment.env["REDIS_SENTINEL_PASSWORD"], secrets.token_hex(32)
        tls = {k: v for k, v in deployment.tls.client_kwargs().items() if k != "ssl"}
        nodes = [
            node_from_url(s.url, "default", old, sentinel=True, socket_timeout=5, **tls)
            for s in sentinels
        ]
        try:
            rotate_sentinel_password(nodes, "default", old, new, clients_moved=lambda: None)
        finally:
            for node in nodes:
                node.admin.close()
        for sentinel, node in zip(sentinels, nodes, strict=True):
            assert old not in sentinel.conf.read_text(), sentinel.conf
            assert can_login(node, "default", new) and not can_login(node, "default", old)
            sentinel.password = new  # what the test's own clients log in with from now on
        restarted = sentinels[0]
        restarted.restart()
        assert not can_login(nodes[0], "default", old)
        # Its peers log in to it with the new password, and it to them: all agree again.
        wait_for(lambda: all(sentinel_ready(s) for s in sentinels), 30, 0.2, message="peers")
        discovered = Sentinel(
            [s.address for s in sentinels],
            sentinel_kwargs={
                "password": new,
                "socket_timeout": 5,
                **deployment.tls.client_kwargs(),
            },
        ).discover_master(MASTER_NAME)
        assert discovered == cluster.master.address
