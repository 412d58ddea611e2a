/* Persistent processes: named shells (on a PTY) and services (on a pipe) that do not belong to
 * the host session. They survive the host hanging up and reconnecting and end only when the
 * host removes them (or at SHUTDOWN). Output goes to a bounded ring per process, addressed by
 * absolute 64-bit offsets, so a reader with a cursor never loses bytes silently: it is told
 * the oldest offset still held. See docs/agent-protocol.md, "Persistent processes".
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

struct proc {
	int used;
	char name[PROC_NAME_MAX + 1];
	pid_t pid;
	int pty;
	int fd;          /* PTY master, or the read end of the output pipe; -1 after EOF */
	struct buf in;   /* input not yet written to the PTY */
	uint8_t *ring;
	size_t ring_size;
	uint64_t end;    /* bytes produced so far: the offset just past the newest byte */
	int exited, status;
};

/* A READ waiting (long poll) for output past its cursor. */
struct waiter {
	int used;
	uint32_t id;
	int slot;
	uint64_t cursor;
	uint32_t max;
	int64_t deadline;
};

static struct proc procs[PROC_MAX];
static struct waiter waiters[PROC_WAITERS_MAX];

static int valid_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > PROC_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
			 (i > 0 && (c == '.' || c == '_' || c == '-'));
		if (!ok)
			return 0;
	}
	return 1;
}

static struct proc *find(const char *name)
{
	for (int i = 0; i < PROC_MAX; i++)
		if (procs[i].used && !strcmp(procs[i].name, name))
			return &procs[i];
	return NULL;
}

int proc_busy(uint32_t id)
{
	for (int i = 0; i < PROC_WAITERS_MAX; i++)
		if (waiters[i].used && waiters[i].id == id)
			return 1;
	return 0;
}

int proc_cancel(uint32_t id)
{
	for (int i = 0; i < PROC_WAITERS_MAX; i++)
		if (waiters[i].used && waiters[i].id == id) {
			waiters[i].used = 0;
			send_error(id, ECANCELED, "request %u was cancelled", id);
			return 0;
		}
	return -1;
}

/* The NAME of a request, checked; sends the ERROR itself and returns NULL when bad. */
static struct proc *named(uint32_t id, const uint8_t *p, uint32_t len, const char *what)
{
	struct tlv_it it = {p, p + len};
	int tag, r;
	const uint8_t *val;
	uint32_t vlen;
	char *name = NULL;
	while ((r = tlv_next(&it, &tag, &val, &vlen)) == 1)
		if (tag == G_NAME && !name)
			name = tlv_as_str(val, vlen);
	if (r < 0 || !name || !valid_name(name)) {
		send_error(id, EINVAL, "malformed %s request (a valid NAME is required)", what);
		free(name);
		return NULL;
	}
	struct proc *x = find(name);
	if (!x)
		send_error(id, ENOENT, "no process named %s", name);
	free(name);
	return x;
}

static void put_state(struct proc *x)
{
	tlv_int(&g_out, G_PID, x->pid);
	tlv_int(&g_out, G_PTY, x->pty);
	tlv_int(&g_out, G_RUNNING, !x->exited);
	tlv_int(&g_out, G_EOF, x->fd < 0);
	tlv_int(&g_out, G_END, (int64_t)x->end);
	if (x->exited && WIFEXITED(x->status))
		tlv_int(&g_out, G_EXIT_CODE, WEXITSTATUS(x->status));
	else if (x->exited && WIFSIGNALED(x->status))
		tlv_int(&g_out, G_SIGNAL, WTERMSIG(x->status));
}

static void reply_read(uint32_t id, struct proc *x, uint64_t cursor, uint32_t max)
{
	static uint8_t data[PROC_READ_MAX];
	uint64_t first = x->end > x->ring_size ? x->end - x->ring_size : 0;
	uint64_t start = cursor < first ? first : cursor;
	uint64_t n = x->end - start;
	if (n > max)
		n = max;
	size_t at = (size_t)(start % x->ring_size);
	size_t head = x->ring_size - at < n ? x->ring_size - at : (size_t)n;
	memcpy(data, x->ring + at, head);
	memcpy(data + head, x->ring, (size_t)n - head);
	size_t f = frame_begin(&g_out, T_OK, id);
	tlv_bytes(&g_out, G_DATA, data, (size_t)n);
	tlv_int(&g_out, G_CURSOR, (int64_t)(start + n));
	tlv_int(&g_out, G_FIRST, (int64_t)first);
	put_state(x);
	frame_end(&g_out, f);
}

/* Answers the waiters of slot that can be answered now (all of them with force). */
static void wake(int slot, int force)
{
	struct proc *x = &procs[slot];
	for (int i = 0; i < PROC_WAITERS_MAX; i++) {
		struct waiter *w = &waiters[i];
		if (!w->used || w->slot != slot)
			continue;
		if (force || x->end > w->cursor || x->exited || x->fd < 0 || now_ms() >= w->deadline) {
			reply_read(w->id, x, w->cursor, w->max);
			w->used = 0;
		}
	}
}

static void close_output(struct proc *x)
{
	if (x->fd >= 0)
		close(x->fd);
	x->fd = -1;
	buf_clear(&x->in);
}

static void forget(struct proc *x)
{
	int slot = (int)(x - procs);
	for (int i = 0; i < PROC_WAITERS_MAX; i++)
		if (waiters[i].used && waiters[i].slot == slot) {
			send_error(waiters[i].id, ESRCH, "process %s was removed", x->name);
			waiters[i].used = 0;
		}
	if (!x->exited) {
		kill(-x->pid, SIGKILL);
		kill(x->pid, SIGKILL);
	}
	close_output(x);
	free(x->in.p);
	free(x->ring);
	memset(x, 0, sizeof *x);
	x->fd = -1;
}

static void spawn_child(char **argv, char **env, const char *cwd, int64_t uid, int64_t gid,
			int pty, int slave, int out)
{
	exec_child_reset();
	if (pty) {
		ioctl(slave, TIOCSCTTY, 0); /* the PTY becomes the session's controlling terminal */
		dup2(slave, 0);
		dup2(slave, 1);
		dup2(slave, 2);
	} else {
		int null = open("/dev/null", O_RDONLY);
		dup2(null, 0);
		dup2(out, 1);
		dup2(out, 2); /* one log: stdout and stderr in the order they were written */
	}
	if (pty && (uid > 0 || gid > 0)) /* its user owns its terminal, as after a login */
		fchown(slave, (uid_t)(uid > 0 ? uid : 0), (gid_t)(gid > 0 ? gid : 0));
	exec_child_run(argv, env, cwd, uid, gid);
}

/* A PTY pair (master non-blocking), window size set; returns 0 or -1 with errno. */
static int open_pty(int *master, int *slave, int rows, int cols)
{
	*master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*master < 0)
		return -1;
	char *sname;
	if (grantpt(*master) != 0 || unlockpt(*master) != 0 || !(sname = ptsname(*master)))
		goto fail;
	*slave = open(sname, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*slave < 0)
		goto fail;
	struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
	ioctl(*master, TIOCSWINSZ, &ws);
	return 0;
fail:;
	int e = errno;
	close(*master);
	errno = e;
	return -1;
}

void proc_spawn(uint32_t id, const uint8_t *payload, uint32_t len)
{
	char *argv[PROC_ARGS_MAX + 1], *envs[PROC_ARGS_MAX + 1], *cwd = NULL, *name = NULL;
	int argc = 0, envc = 0, pty = 0, bad = 0, too_many = 0, r, tag;
	int64_t rows = 24, cols = 80, ring = PROC_RING_DEFAULT, uid, gid;
	exec_default_user(&uid, &gid); /* as EXEC: the image's user unless UID/GID say */
	struct tlv_it it = {payload, payload + len};
	const uint8_t *val;
	uint32_t vlen;
	while ((r = tlv_next(&it, &tag, &val, &vlen)) == 1) {
		if ((tag == G_ARG && argc == PROC_ARGS_MAX) || (tag == G_ENV && envc == PROC_ARGS_MAX))
			too_many = 1;
		else if (tag == G_ARG)
			bad |= !(argv[argc++] = tlv_as_str(val, vlen));
		else if (tag == G_ENV)
			bad |= !(envs[envc++] = tlv_as_str(val, vlen));
		else if (tag == G_CWD && !cwd)
			bad |= !(cwd = tlv_as_str(val, vlen));
		else if (tag == G_NAME && !name)
			bad |= !(name = tlv_as_str(val, vlen));
		else if (tag == G_PTY)
			pty = tlv_as_int(val, vlen) != 0;
		else if (tag == G_ROWS)
			rows = tlv_as_int(val, vlen);
		else if (tag == G_COLS)
			cols = tlv_as_int(val, vlen);
		else if (tag == G_RING)
			ring = tlv_as_int(val, vlen);
		else if (tag == G_UID)
			uid = tlv_as_int(val, vlen);
		else if (tag == G_GID)
			gid = tlv_as_int(val, vlen);
	}
	argv[argc] = NULL;
	struct proc *x = NULL;
	int master = -1, slave = -1, pout[2] = {-1, -1};
	if (r < 0 || bad || argc == 0 || !name) {
		send_error(id, EINVAL, "malformed SPAWN request (NAME and a non-empty argv are required, "
				       "no NUL bytes)");
		goto out;
	}
	if (!valid_name(name)) {
		send_error(id, EINVAL, "bad process name '%.80s': use 1-%d characters a-z 0-9 . _ -, "
				       "starting with a letter or digit", name, PROC_NAME_MAX);
		goto out;
	}
	if (too_many) {
		send_error(id, E2BIG, "more than %d arguments or environment entries", PROC_ARGS_MAX);
		goto out;
	}
	if (rows < 1 || rows > PROC_WINSIZE_MAX || cols < 1 || cols > PROC_WINSIZE_MAX) {
		send_error(id, EINVAL, "window size %lldx%lld is out of range (1-%d each)",
			   (long long)rows, (long long)cols, PROC_WINSIZE_MAX);
		goto out;
	}
	if (ring < PROC_RING_MIN || ring > PROC_RING_MAX) {
		send_error(id, EINVAL, "ring size %lld is out of range (%u-%u bytes)", (long long)ring,
			   PROC_RING_MIN, PROC_RING_MAX);
		goto out;
	}
	if (find(name)) {
		send_error(id, EEXIST, "a process named %s exists already", name);
		goto out;
	}
	for (int i = 0; i < PROC_MAX && !x; i++)
		if (!procs[i].used)
			x = &procs[i];
	if (!x) {
		send_error(id, EAGAIN, "too many persistent processes (limit %d); remove one first",
			   PROC_MAX);
		goto out;
	}
	if (pty ? open_pty(&master, &slave, (int)rows, (int)cols) != 0
		: pipe2(pout, O_CLOEXEC) != 0) {
		send_error(id, errno, "cannot create a %s: %s", pty ? "pseudo-terminal" : "pipe",
			   strerror(errno));
		goto out;
	}
	uint8_t *mem = malloc((size_t)ring);
	if (!mem) {
		send_error(id, ENOMEM, "cannot allocate a %lld-byte output ring", (long long)ring);
		goto out;
	}
	int has_term = 0;
	for (int i = 0; i < envc; i++)
		has_term |= !strncmp(envs[i], "TERM=", 5);
	if (pty && !has_term) /* a terminal's default; the request's own TERM wins */
		envs[envc++] = strdup("TERM=xterm-256color");
	char **env = exec_build_env(envs, envc, uid);
	pid_t pid = fork();
	if (pid == 0)
		spawn_child(argv, env, cwd, uid, gid, pty, slave, pout[1]);
	free(env);
	if (pid < 0) {
		send_error(id, errno, "cannot fork: %s", strerror(errno));
		free(mem);
		goto out;
	}
	memset(x, 0, sizeof *x);
	x->used = 1;
	snprintf(x->name, sizeof x->name, "%s", name);
	x->pid = pid;
	x->pty = pty;
	x->fd = pty ? master : pout[0];
	master = pout[0] = -1;
	fcntl(x->fd, F_SETFL, O_NONBLOCK);
	x->ring = mem;
	x->ring_size = (size_t)ring;
	size_t f = frame_begin(&g_out, T_OK, id);
	tlv_int(&g_out, G_PID, pid);
	frame_end(&g_out, f);
out:
	for (int fd_i = 0; fd_i < 2; fd_i++)
		if (pout[fd_i] >= 0)
			close(pout[fd_i]);
	if (master >= 0)
		close(master);
	if (slave >= 0)
		close(slave);
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	for (int i = 0; i < envc; i++)
		free(envs[i]);
	free(cwd);
	free(name);
}

void proc_write(uint32_t id, const uint8_t *p, uint32_t len)
{
	struct proc *x = named(id, p, len, "WRITE");
	if (!x)
		return;
	struct tlv_it it = {p, p + len};
	int tag;
	const uint8_t *val, *data = NULL;
	uint32_t vlen, n = 0;
	while (tlv_next(&it, &tag, &val, &vlen) == 1)
		if (tag == G_DATA && !data)
			data = val, n = vlen;
	if (!x->pty) {
		send_error(id, ENOTTY, "process %s has no terminal to write to (its stdin is /dev/null)",
			   x->name);
		return;
	}
	if (x->exited || x->fd < 0) {
		send_error(id, EPIPE, "process %s has ended", x->name);
		return;
	}
	if (buf_pending(&x->in) + n > PROC_INPUT_MAX) {
		send_error(id, EAGAIN, "process %s is not reading its input (%u bytes waiting)",
			   x->name, (unsigned)buf_pending(&x->in));
		return;
	}
	if (n)
		buf_put(&x->in, data, n);
	send_ok_empty(id);
}

static void pump(struct proc *x);

/* What the process wrote before a request came belongs in its answer: the loop reads the
 * host's requests before the processes' output, so take what is waiting first (bounded: a
 * process writing without pause cannot hold the agent here). */
static void drain(struct proc *x)
{
	for (int i = 0; i < 16 && x->fd >= 0; i++) {
		uint64_t before = x->end;
		pump(x);
		if (x->end == before)
			break;
	}
}

void proc_read(uint32_t id, const uint8_t *p, uint32_t len)
{
	struct proc *x = named(id, p, len, "READ");
	if (!x)
		return;
	struct tlv_it it = {p, p + len};
	int tag;
	const uint8_t *val;
	uint32_t vlen;
	int64_t cursor = 0, max = PROC_READ_MAX, wait = 0;
	while (tlv_next(&it, &tag, &val, &vlen) == 1) {
		if (tag == G_CURSOR)
			cursor = tlv_as_int(val, vlen);
		else if (tag == G_MAX)
			max = tlv_as_int(val, vlen);
		else if (tag == G_WAIT_MS)
			wait = tlv_as_int(val, vlen);
	}
	if (cursor < 0 || (uint64_t)cursor > x->end) {
		send_error(id, EINVAL, "cursor %lld is outside the output of %s (0-%llu)",
			   (long long)cursor, x->name, (unsigned long long)x->end);
		return;
	}
	if (max < 1 || max > PROC_READ_MAX || wait < 0 || wait > PROC_WAIT_MAX_MS) {
		send_error(id, EINVAL, "MAX must be 1-%u bytes and WAIT_MS 0-%d", PROC_READ_MAX,
			   PROC_WAIT_MAX_MS);
		return;
	}
	drain(x);
	if (wait == 0 || (uint64_t)cursor < x->end || x->exited || x->fd < 0) {
		reply_read(id, x, (uint64_t)cursor, (uint32_t)max);
		return;
	}
	for (int i = 0; i < PROC_WAITERS_MAX; i++)
		if (!waiters[i].used) {
			waiters[i] = (struct waiter){1, id, (int)(x - procs), (uint64_t)cursor,
						     (uint32_t)max, now_ms() + wait};
			return;
		}
	send_error(id, EAGAIN, "too many waiting reads (limit %d)", PROC_WAITERS_MAX);
}

void proc_resize(uint32_t id, const uint8_t *p, uint32_t len)
{
	struct proc *x = named(id, p, len, "RESIZE");
	if (!x)
		return;
	struct tlv_it it = {p, p + len};
	int tag;
	const uint8_t *val;
	uint32_t vlen;
	int64_t rows = 0, cols = 0;
	while (tlv_next(&it, &tag, &val, &vlen) == 1) {
		if (tag == G_ROWS)
			rows = tlv_as_int(val, vlen);
		else if (tag == G_COLS)
			cols = tlv_as_int(val, vlen);
	}
	if (rows < 1 || rows > PROC_WINSIZE_MAX || cols < 1 || cols > PROC_WINSIZE_MAX) {
		send_error(id, EINVAL, "window size %lldx%lld is out of range (1-%d each)",
			   (long long)rows, (long long)cols, PROC_WINSIZE_MAX);
		return;
	}
	if (!x->pty || x->fd < 0) {
		send_error(id, ENOTTY, "process %s has no terminal", x->name);
		return;
	}
	/* The kernel sends SIGWINCH to the terminal's foreground process group. */
	struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
	if (ioctl(x->fd, TIOCSWINSZ, &ws) != 0) {
		send_error(id, errno, "cannot resize the terminal of %s: %s", x->name, strerror(errno));
		return;
	}
	send_ok_empty(id);
}

void proc_kill(uint32_t id, const uint8_t *p, uint32_t len)
{
	struct proc *x = named(id, p, len, "KILL");
	if (!x)
		return;
	struct tlv_it it = {p, p + len};
	int tag;
	const uint8_t *val;
	uint32_t vlen;
	int64_t sig = SIGTERM;
	while (tlv_next(&it, &tag, &val, &vlen) == 1)
		if (tag == G_SIGNAL)
			sig = tlv_as_int(val, vlen);
	if (sig < 1 || sig >= NSIG) {
		send_error(id, EINVAL, "signal %lld is out of range (1-%d)", (long long)sig, NSIG - 1);
		return;
	}
	if (x->exited) {
		send_error(id, ESRCH, "process %s has ended", x->name);
		return;
	}
	/* A terminal's signal goes where Ctrl-C would send it: its foreground process group. */
	pid_t group = x->pid;
	if (x->pty && x->fd >= 0) {
		pid_t fg = tcgetpgrp(x->fd);
		if (fg > 0)
			group = fg;
	}
	if (kill(-group, (int)sig) != 0)
		kill(x->pid, (int)sig);
	send_ok_empty(id);
}

void proc_list(uint32_t id)
{
	for (int i = 0; i < PROC_MAX; i++) {
		struct proc *x = &procs[i];
		if (!x->used)
			continue;
		size_t f = frame_begin(&g_out, T_ENTRY, id);
		tlv_str(&g_out, G_NAME, x->name);
		put_state(x);
		frame_end(&g_out, f);
	}
	send_ok_empty(id);
}

void proc_remove(uint32_t id, const uint8_t *p, uint32_t len)
{
	struct proc *x = named(id, p, len, "REMOVE");
	if (!x)
		return;
	forget(x);
	send_ok_empty(id);
}

void proc_reaped(pid_t pid, int status)
{
	for (int i = 0; i < PROC_MAX; i++)
		if (procs[i].used && procs[i].pid == pid && !procs[i].exited) {
			procs[i].exited = 1;
			procs[i].status = status;
			wake(i, 0);
		}
}

void proc_drop_waiters(void)
{
	memset(waiters, 0, sizeof waiters);
}

int proc_poll_fds(struct pollfd *fds, int max)
{
	int n = 0;
	for (int i = 0; i < PROC_MAX && n < max; i++) {
		struct proc *x = &procs[i];
		if (!x->used || x->fd < 0)
			continue;
		short ev = POLLIN;
		if (buf_pending(&x->in) > 0)
			ev |= POLLOUT;
		fds[n++] = (struct pollfd){.fd = x->fd, .events = ev};
	}
	return n;
}

static void pump(struct proc *x)
{
	static uint8_t data[65536];
	/* Always drained: a full ring overwrites its oldest bytes, the process never blocks. */
	ssize_t n = read(x->fd, data, sizeof data);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) { /* EOF, or EIO from a PTY whose last holder closed it */
		close_output(x);
		return;
	}
	const uint8_t *src = data;
	size_t left = (size_t)n;
	if (left > x->ring_size) {
		src += left - x->ring_size;
		x->end += left - x->ring_size;
		left = x->ring_size;
	}
	while (left > 0) {
		size_t at = (size_t)(x->end % x->ring_size);
		size_t k = x->ring_size - at < left ? x->ring_size - at : left;
		memcpy(x->ring + at, src, k);
		src += k;
		left -= k;
		x->end += k;
	}
}

static void push_input(struct proc *x)
{
	ssize_t n = write(x->fd, x->in.p + x->in.off, buf_pending(&x->in));
	if (n > 0)
		buf_consume(&x->in, (size_t)n);
	else if (n < 0 && errno != EAGAIN && errno != EINTR)
		buf_clear(&x->in);
}

void proc_handle(struct pollfd *fds, int n)
{
	for (int k = 0; k < n; k++) {
		if (!fds[k].revents)
			continue;
		for (int i = 0; i < PROC_MAX; i++) {
			struct proc *x = &procs[i];
			if (!x->used || x->fd != fds[k].fd)
				continue;
			if (fds[k].revents & POLLOUT)
				push_input(x);
			if (fds[k].revents & (POLLIN | POLLHUP | POLLERR))
				pump(x);
			wake(i, 0);
			break;
		}
	}
}

int64_t proc_next_deadline(void)
{
	int64_t next = 0;
	for (int i = 0; i < PROC_WAITERS_MAX; i++)
		if (waiters[i].used && (!next || waiters[i].deadline < next))
			next = waiters[i].deadline;
	return next;
}

void proc_timers(void)
{
	int64_t now = now_ms();
	for (int i = 0; i < PROC_WAITERS_MAX; i++) {
		struct waiter *w = &waiters[i];
		if (w->used && now >= w->deadline) {
			reply_read(w->id, &procs[w->slot], w->cursor, w->max);
			w->used = 0;
		}
	}
}
