#!/usr/bin/env python3
"""Receives sd_notify datagrams the way systemd does, for scripts that start preforkd by hand.

    notify_recv.py SOCKET_PATH LOG_FILE

Binds an AF_UNIX datagram socket at SOCKET_PATH (the caller exports it as NOTIFY_SOCKET), then
appends every datagram to LOG_FILE, one assignment per line, flushed at once, so a caller can
poll LOG_FILE for READY=1. Runs until SIGTERM.
"""
import os
import signal
import socket
import sys


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(argv[1])
    with open(argv[2], "a", buffering=1) as log:
        while True:
            datagram = receiver.recv(65536)
            log.write(datagram.decode("utf-8", "replace").rstrip("\n") + "\n")


if __name__ == "__main__":
    main(sys.argv)
