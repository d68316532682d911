"""The URL forms of Redis Cluster and Sentinel (``aioq/hosts.py``): what they parse to, and
the one-line errors for malformed ones (no server needed)."""

from __future__ import annotations

import pytest

from aioq import App
from aioq.connection import check_url
from aioq.hosts import parse_hosts_url


def test_cluster_and_sentinel_urls_parse() -> None:
    c = parse_hosts_url("redis+cluster://u:p%40ss@h1:7000,h2,[::1]:7002?socket_timeout=3")
    assert c.cluster
    assert not c.tls
    assert c.hosts == (("h1", 7000), ("h2", 6379), ("::1", 7002))
    assert c.node_url("h2", 6379) == "redis://u:p%40ss@h2:6379/0?socket_timeout=3"
    s = parse_hosts_url("rediss+sentinel://s1:26379,s2/mymaster/2")
    assert not s.cluster
    assert s.tls
    assert (s.service, s.db, s.hosts) == ("mymaster", 2, (("s1", 26379), ("s2", 26379)))
    assert s.node_url("10.0.0.5", 6380) == "rediss://10.0.0.5:6380/2"
    assert parse_hosts_url("redis+sentinel://s1/mymaster").db == 0
    assert parse_hosts_url("redis+cluster://h1:7000/").hosts == (("h1", 7000),)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://h1:7000,:7001", "an empty host in ':7001'"),
        ("redis+cluster://h1:99999", "the port of 'h1:99999' is not a number"),
        ("redis+cluster://h1:7000/3", "a cluster has only database 0"),
        ("redis+sentinel://s1:26379", "no service name"),
        ("redis+sentinel://s1/mymaster/x", "the database must be a non-negative integer"),
        ("redis+sentinel://s1/mymaster?db=2", "give the database in the path"),
        ("redis+cluster://h1?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
    ],
)
def test_malformed_urls_name_the_url_and_the_fault(url: str, why: str) -> None:
    with pytest.raises(ValueError, match="is not a Redis URL") as info:
        check_url(url)
    assert why in str(info.value)
    assert url.split("?")[0].split("/")[2].split(",")[0] in str(info.value)


def test_apps_take_them_and_hide_the_password() -> None:
    app = App("x", redis_url="redis+sentinel://:secret@s1,s2/mymaster/0")
    assert "secret" not in repr(app)
    assert App("y", redis_url="redis+cluster://h1:7000,h2:7001").redis_url.startswith("redis+")
    with pytest.raises(ValueError, match="redis\\+cluster://HOST:PORT"):
        App("z", redis_url="cluster://h1")
