"""eclair: a GDB remote stub for McKernel dumps and live McKernel instances.

packets (framing codec) -> server (protocol over a Provider) -> transport
(stdio, loopback TCP) -> cli (gdb launcher, upstream-compatible options).
"""
