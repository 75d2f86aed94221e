"""Small services the daemon can run on the stack's own sockets (UDP echo, RFC 862).

A service is sans-I/O like the sockets it uses: the runtime calls its
``poll()`` after each batch, and it moves whatever is waiting.
"""
