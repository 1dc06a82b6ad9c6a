"""Rigs for tests and bench tools, never part of the product: real Redis Cluster
(rigs.redis_cluster) and Sentinel (rigs.sentinel) sets started and stopped by pid,
and free loopback ports to start whole stacks side by side (rigs.ports).

Like chatclient/ and bench/, it runs from the checkout and is not installed with
chatfleet; the product (chat_server.py and its packages, stack/) never imports it.
"""
