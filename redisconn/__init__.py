"""Which Redis a process uses (one server, a Sentinel-watched primary, or a Cluster) and how."""

from redisconn.connect import RedisClient, RedisTarget, connect, connect_probe, is_cluster, ping

__all__ = ["RedisClient", "RedisTarget", "connect", "connect_probe", "is_cluster", "ping"]
