# A minimal stand-in for systemd's service manager, enough to test remapd's file descriptor store
# hand-over on a host without systemd as PID 1: a notify socket (READY=1, MAINPID=, BARRIER=1,
# FDSTORE=1 + FDNAME=, FDSTOREREMOVE=1), and restarts that pass the stored descriptors back in
# LISTEN_FDS / LISTEN_FDNAMES / LISTEN_PID, like `systemctl restart` with FileDescriptorStoreMax=.
#
# Usage: fake-service-manager.py NOTIFY_SOCKET LOGFILE -- COMMAND...
# Reads commands on stdin, one per line: "restart" (SIGTERM, wait for exit, start again with the
# store) or "stop" (SIGTERM, wait, close the store). Prints "ready PID STORED" after each READY=1,
# "exited CODE STORED" after a restart's stop and "stopped CODE STORED" on stop.
# While it stops the service, the job it runs ("restart" or "stop") is what `systemctl list-jobs`
# would show: the service gets REMAPD_SYSTEMCTL=fake-systemctl.sh, which prints it.
import array, os, select, signal, socket, sys, time

notify_path, logfile = sys.argv[1], sys.argv[2]
cmd = sys.argv[sys.argv.index('--') + 1:]
if os.path.exists(notify_path):
    os.unlink(notify_path)
ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
ns.bind(notify_path)
ns.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
store = {}  # name -> fd
jobs_path = notify_path + '.jobs'
fake_systemctl = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fake-systemctl.sh')

def set_job(kind):
    with open(jobs_path, 'w') as f:
        f.write('1 remapd-test.service %s running\n' % kind if kind else '')
main_pid = None

def out(line):
    sys.stdout.write(line + '\n')
    sys.stdout.flush()

def start():
    global main_pid
    names = list(store.keys())
    fds = [store[n] for n in names]
    pid = os.fork()
    if pid == 0:
        high = [os.dup(fd) for fd in fds]  # out of the way of 3.. first
        for i, fd in enumerate(high):
            os.dup2(fd, 3 + i, inheritable=True)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, REMAPD_FDSTORE='64',
                   REMAPD_SYSTEMCTL=fake_systemctl, FAKE_SYSTEMCTL_JOBS=jobs_path)
        if fds:
            env.update(LISTEN_FDS=str(len(fds)), LISTEN_FDNAMES=':'.join(names), LISTEN_PID=str(os.getpid()))
        log = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3 + len(fds), 1024)
        os.execve(cmd[0], cmd, env)
    main_pid = pid

def handle_notify():
    global main_pid
    fds = array.array('i')
    msg, anc, _flags, _addr = ns.recvmsg(4096, socket.CMSG_SPACE(253 * fds.itemsize) + socket.CMSG_SPACE(12))
    for level, typ, data in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    fields = dict(l.split('=', 1) for l in msg.decode().split('\n') if '=' in l)
    if fields.get('BARRIER') == '1':
        for fd in fds:
            os.close(fd)
        return
    if fields.get('FDSTORE') == '1':
        name = fields.get('FDNAME', 'stored')
        for fd in fds:
            if name in store:
                os.close(store[name])
            store[name] = fd
        return
    for fd in fds:
        os.close(fd)
    if fields.get('FDSTOREREMOVE') == '1':
        fd = store.pop(fields.get('FDNAME', ''), None)
        if fd is not None:
            os.close(fd)
    if 'MAINPID' in fields:
        main_pid = int(fields['MAINPID'])
    if fields.get('READY') == '1':
        out('ready %d %d' % (main_pid, len(store)))

def wait_exit(pid, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([ns], [], [], 0.05)
        if r:
            handle_notify()
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        if done:
            # messages sent just before the exit are still queued
            while select.select([ns], [], [], 0.1)[0]:
                handle_notify()
            return os.waitstatus_to_exitcode(status)
    os.kill(pid, signal.SIGKILL)
    return -9

start()
buf = b''
while True:
    r, _, _ = select.select([ns, sys.stdin], [], [], 0.5)
    if ns in r:
        handle_notify()
    if sys.stdin in r:
        line = sys.stdin.readline()
        if not line:
            line = 'stop\n'
        c = line.strip()
        if c in ('restart', 'stop'):
            set_job(c)
            os.kill(main_pid, signal.SIGTERM)
            code = wait_exit(main_pid)
            set_job(None)
            if c == 'restart':
                out('exited %d %d' % (code, len(store)))
                start()
            else:
                stored = len(store)
                for fd in store.values():
                    os.close(fd)
                out('stopped %d %d' % (code, stored))
                break
