"""Starting chatfleet: supervisord with Redis, N chat instances and HAProxy on one box
(stack.run); for many hosts, chat-only hosts and a front door (stack.hosts, stack.front),
and real Redis Cluster and Sentinel sets (stack.redis_cluster, stack.sentinel).
"""
