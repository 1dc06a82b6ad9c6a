"""Which Redis a process uses (one server, a Sentinel-watched primary, or a Cluster) and how.

`open_topology` picks it once; the `Topology` it returns is all the rest of
chatfleet knows of the difference.
"""

from redisconn.connect import RedisTarget, connect, connect_probe, open_topology
from redisconn.topology import RedisClient, Topology, topology_of

__all__ = ["RedisClient", "RedisTarget", "Topology", "connect", "connect_probe",
           "open_topology", "topology_of"]
