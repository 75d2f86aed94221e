"""The impure layer: real fds, clocks, network namespaces; nothing below imports it."""
