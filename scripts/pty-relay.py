#!/usr/bin/env python3
"""Relay bytes between a pseudo-terminal and this process's stdin/stdout.

Used by tether (src/transport/pty.ts) to give a simulated module a UART that
real serial software (node `serialport`, minicom, pyserial) can open by path.

    python3 pty-relay.py [--link PATH] [--max-pending BYTES] [--ignore-sigint]

* Creates a pty pair and puts the slave in raw mode (8 bits, no echo, no
  CR/LF translation, no flow control, no signals).
* Prints "PTY <slave path>" as the first line on stderr (then "LINK <path>" if
  --link was given). Later stderr lines are "DROPPED <n>" (see below) or
  "ERROR <text>".
* Bytes read from stdin are written to the master, so they appear to whoever
  opened the slave path; bytes the slave client writes are read from the
  master and written to stdout. Everything is binary and unbuffered.
* Keeps its own slave fd open, so the master never sees EIO/hangup when a
  client closes the slave and later reopens it.
* Like a UART without flow control, it never blocks its stdin: when more than
  --max-pending bytes (default 1 MiB) wait for the slave client to read them,
  the oldest are discarded and "DROPPED <n>" is printed on stderr.
* Runs until stdin reaches EOF (pending bytes get up to 0.5 s to drain) or it
  receives SIGTERM/SIGHUP (and SIGINT unless --ignore-sigint: a parent that
  handles Ctrl-C itself passes it, and ends us by closing stdin or SIGTERM).
  Exits 0 on a clean shutdown, 1 on a fatal error, 2 on bad arguments.
* --link PATH creates a symlink to the slave path (replacing a stale symlink,
  never a regular file), removed at exit.

Python 3 standard library only.
"""

import errno
import os
import pty
import select
import signal
import sys
import termios
import time

READ_SIZE = 65536
# Writes to stdout are at most one pipe page, so a write after select() never blocks for long.
STDOUT_CHUNK = 4096
DEFAULT_MAX_PENDING = 1 << 20
DRAIN_AT_EOF_S = 0.5

stopping = False


def on_signal(signum, frame):
    global stopping
    stopping = True


def log(line):
    try:
        os.write(2, (line + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def set_raw(fd):
    """Raw mode like cfmakeraw(): 8N1, no echo, no CR/LF mapping, no flow control, no signals."""
    attrs = termios.tcgetattr(fd)
    iflag, oflag, cflag, lflag = attrs[0], attrs[1], attrs[2], attrs[3]
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
               | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON
               | termios.IXOFF | termios.IXANY | termios.INPCK)
    if hasattr(termios, "IMAXBEL"):
        iflag &= ~termios.IMAXBEL
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag &= ~(termios.CSIZE | termios.PARENB | termios.CSTOPB)
    if hasattr(termios, "CRTSCTS"):
        cflag &= ~termios.CRTSCTS
    cflag |= termios.CS8 | termios.CREAD | termios.CLOCAL
    attrs[0], attrs[1], attrs[2], attrs[3] = iflag, oflag, cflag, lflag
    attrs[6][termios.VMIN] = 1
    attrs[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def parse_args(argv):
    link = None
    max_pending = DEFAULT_MAX_PENDING
    ignore_sigint = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--link" and i + 1 < len(argv):
            link = argv[i + 1]
            i += 2
        elif arg == "--max-pending" and i + 1 < len(argv) and argv[i + 1].isdigit() and int(argv[i + 1]) > 0:
            max_pending = int(argv[i + 1])
            i += 2
        elif arg == "--ignore-sigint":
            ignore_sigint = True
            i += 1
        else:
            log("ERROR usage: pty-relay.py [--link PATH] [--max-pending BYTES] [--ignore-sigint]")
            sys.exit(2)
    return link, max_pending, ignore_sigint


def make_link(link, target):
    """Point `link` at `target`, replacing a stale symlink but never a real file."""
    if os.path.islink(link):
        os.unlink(link)
    elif os.path.exists(link):
        raise OSError(errno.EEXIST, "refusing to replace a file that is not a symlink", link)
    os.symlink(target, link)


def remove_link(link, target):
    try:
        if os.path.islink(link) and os.readlink(link) == target:
            os.unlink(link)
    except OSError:
        pass


def set_nonblocking(fd):
    os.set_blocking(fd, False)


def relay(master, stdin_fd, stdout_fd, max_pending, wake_fd):
    to_master = bytearray()
    to_stdout = bytearray()
    stdin_open = True
    drain_deadline = None
    while not stopping:
        if not stdin_open:
            if not to_master:
                return
            if drain_deadline is None:
                drain_deadline = time.monotonic() + DRAIN_AT_EOF_S
            elif time.monotonic() >= drain_deadline:
                return
        # wake_fd becomes readable when a signal arrives, so select() returns at once
        # (PEP 475 would otherwise resume the wait after our handler ran).
        rlist = [wake_fd]
        wlist = []
        if stdin_open:
            rlist.append(stdin_fd)
        # Stop reading the slave client while stdout is backed up (the host is slow).
        if len(to_stdout) < max_pending:
            rlist.append(master)
        if to_master:
            wlist.append(master)
        if to_stdout:
            wlist.append(stdout_fd)
        try:
            readable, writable, _ = select.select(rlist, wlist, [], 0.1 if not stdin_open else 1.0)
        except InterruptedError:
            continue
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            raise

        if wake_fd in readable:
            try:
                os.read(wake_fd, 512)
            except (BlockingIOError, InterruptedError):
                pass
            continue  # re-check `stopping`

        if stdin_fd in readable:
            try:
                data = os.read(stdin_fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                data = None
            if data == b"":
                stdin_open = False
            elif data:
                to_master += data
                excess = len(to_master) - max_pending
                if excess > 0:
                    del to_master[:excess]
                    log("DROPPED %d" % excess)

        if master in readable:
            try:
                data = os.read(master, READ_SIZE)
                to_stdout += data
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                # EIO: no slave fd open (cannot happen while we hold ours); back off.
                time.sleep(0.01)

        if master in writable and to_master:
            try:
                n = os.write(master, to_master)
                del to_master[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                time.sleep(0.01)

        if stdout_fd in writable and to_stdout:
            try:
                n = os.write(stdout_fd, to_stdout[:STDOUT_CHUNK])
                del to_stdout[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except (BrokenPipeError, ConnectionResetError):
                return  # the host went away


def main():
    link, max_pending, ignore_sigint = parse_args(sys.argv[1:])
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN if ignore_sigint else on_signal)
    # A vanished host must not kill us with SIGPIPE; we see EPIPE instead.
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    master = slave = None
    slave_path = None
    linked = False
    try:
        master, slave = pty.openpty()
        slave_path = os.ttyname(slave)
        set_raw(slave)
        # Only the master is non-blocking: stdin/stdout may be shared with a terminal.
        set_nonblocking(master)
        if link is not None:
            make_link(link, slave_path)
            linked = True
        log("PTY " + slave_path)
        if linked:
            log("LINK " + link)
        relay(master, 0, 1, max_pending, wake_r)
    except Exception as e:  # noqa: BLE001  report, clean up, exit 1
        log("ERROR %s" % e)
        return 1
    finally:
        if linked:
            remove_link(link, slave_path)
        for fd in (master, slave):
            if fd is None:
                continue
            try:
                os.close(fd)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
