"""Starting the whole stack: supervisord with Redis, N chat instances and HAProxy."""
