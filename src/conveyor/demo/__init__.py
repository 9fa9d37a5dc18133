"""`conveyor demo`: analyse every Python file of the standard library as tasks.

The demo starts a real server and worker processes on a fresh SQLite store,
enqueues one task per `.py` file it finds, shows progress and prints a
summary with throughput, latency and the dead-lettered files.
"""
