"""URLs that name several servers: Redis Cluster and Sentinel.

::

    redis+cluster://[user:password@]h1:p1,h2:p2[?query]        (rediss+cluster:// for TLS)
    redis+sentinel://[user:password@]h1:p1,h2:p2/SERVICE[/DB][?query]   (rediss+sentinel://)

A cluster URL lists some of the cluster's nodes (any reachable one tells the rest); a sentinel
URL lists sentinels and the name of the service they watch (``sentinel monitor SERVICE ...``).
The user and password are the data nodes' (the master's); the query's parameters
(``socket_timeout=``, ``ssl_ca_certs=`` ...) apply to every connection to a data node, as in a
``redis://`` URL. Sentinels are asked without a password; with ``rediss+sentinel://`` they
are reached over TLS too (Redis' ``tls-port`` serves both). A port left out is 6379 for a
cluster node, 26379 for a sentinel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = CLUSTER_SCHEMES + SENTINEL_SCHEMES

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class HostsURL:
    """A parsed ``redis+cluster://`` or ``redis+sentinel://`` URL."""

    scheme: str
    userinfo: str  # "user:password@" as written (percent-encoded), or ""
    hosts: tuple[Address, ...]
    service: str  # the sentinel service; "" for a cluster
    db: int
    query: str

    @property
    def cluster(self) -> bool:
        return self.scheme in CLUSTER_SCHEMES

    @property
    def tls(self) -> bool:
        return self.scheme.startswith("rediss")

    def node_url(self, host: str, port: int) -> str:
        """The ``redis://`` (or ``rediss://``) URL of one data node, with this URL's user,
        password, database and query."""
        scheme = "rediss" if self.tls else "redis"
        name = f"[{host}]" if ":" in host else host
        query = f"?{self.query}" if self.query else ""
        return f"{scheme}://{self.userinfo}{name}:{port}/{self.db}{query}"


def is_hosts_url(url: str) -> bool:
    return isinstance(url, str) and url.partition("://")[0] in SCHEMES


def is_cluster_url(url: str) -> bool:
    return isinstance(url, str) and url.partition("://")[0] in CLUSTER_SCHEMES


def parse_hosts_url(url: str, source: str = "redis_url") -> HostsURL:
    """Parse a cluster or sentinel URL; ``ValueError`` naming ``source`` and what is wrong."""
    from .connection import redacted

    def bad(why: str) -> ValueError:
        return ValueError(f"{source} {redacted(url)!r} is not a Redis URL: {why}")

    scheme, sep, _ = url.partition("://")
    if scheme not in SCHEMES or not sep:
        raise bad(f"expected one of {', '.join(s + '://' for s in SCHEMES)}")
    cluster = scheme in CLUSTER_SCHEMES
    shape = (
        f"{scheme}://HOST:PORT[,HOST:PORT...]"
        if cluster
        else f"{scheme}://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]"
    )
    parts = urlsplit(url)
    if parts.fragment:
        raise bad("a fragment (#...) is not part of a Redis URL")
    userinfo, _, netloc = parts.netloc.rpartition("@")
    hosts = tuple(_address(h, 6379 if cluster else 26379, bad) for h in netloc.split(","))
    path = [p for p in parts.path.split("/") if p]
    service, db = "", "0"
    if cluster:
        if path not in ([], ["0"]):
            raise bad(f"a cluster has only database 0 (expected {shape})")
    else:
        if not path or len(path) > 2:
            raise bad(f"no service name (expected {shape})")
        service = path[0]
        db = path[1] if len(path) == 2 else "0"
    if not (db.isascii() and db.isdigit()):
        raise bad(f"the database must be a non-negative integer, got {db!r}")
    if "db=" in parts.query:
        raise bad(f"give the database in the path ({shape}), not as db=")
    return HostsURL(
        scheme, f"{userinfo}@" if userinfo else "", hosts, service, int(db), parts.query
    )


def _address(text: str, default_port: int, bad: Callable[[str], ValueError]) -> Address:
    host, port = text, ""
    if text.startswith("["):  # [IPv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not host:
        raise bad(f"an empty host in {text!r} (hosts are HOST[:PORT], comma-separated)")
    if not port:
        return host, default_port
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise bad(f"the port of {text!r} is not a number from 1 to 65535")
    return host, int(port)
