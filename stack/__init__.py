"""Starting chatfleet: supervisord with Redis, N chat instances and HAProxy on one box
(stack.run, `make run`; tests and bench start the same Stack); for many hosts, the front
door over chat-only hosts (stack.hosts, stack.front).
"""
