/* EXEC: one child per request, in its own session, output streamed as it comes. */
#include "agent.h"

#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_EXECS 64
/* After the main process exits, how long to wait for pipes held open by background children. */
#define DRAIN_GRACE_MS 200

struct exec {
	int used;
	uint32_t id;
	pid_t pid;
	int fd[3]; /* stdin (write end), stdout, stderr (read ends); -1 when closed */
	struct buf in;
	int stdin_eof;
	uint64_t in_done, in_acked; /* stdin bytes the command took; reported to the host */
	int64_t start_ms, deadline_ms, exited_ms;
	int exited, status, timed_out;
	int sync; /* flush the guest's file systems before reporting EXIT */
	uint64_t cap[2], sent[2];
	int trunc[2];
};

static struct exec execs[MAX_EXECS];

static struct exec *find(uint32_t id)
{
	for (int i = 0; i < MAX_EXECS; i++)
		if (execs[i].used && execs[i].id == id)
			return &execs[i];
	return NULL;
}

int exec_busy(uint32_t id)
{
	return find(id) != NULL;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* Defaults of an environment made from a container image, read once at boot from
 * IMAGE_DEFAULTS (docs/agent-protocol.md): its Env under the request's ENV, its WorkingDir
 * when the request has no CWD, its user when the request has no UID/GID. */
#define MAX_DEFAULT_ENV 1024
static char *dflt_env[MAX_DEFAULT_ENV];
static int dflt_envc;
static char *dflt_cwd;
static int64_t dflt_uid = -1, dflt_gid = -1;

void exec_load_defaults(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return;
	static char line[65536];
	while (fgets(line, sizeof line, f)) {
		size_t n = strlen(line);
		if (n && line[n - 1] == '\n')
			line[--n] = 0;
		if (!strncmp(line, "uid ", 4))
			dflt_uid = strtoll(line + 4, NULL, 10);
		else if (!strncmp(line, "gid ", 4))
			dflt_gid = strtoll(line + 4, NULL, 10);
		else if (!strncmp(line, "cwd /", 5) && !dflt_cwd)
			dflt_cwd = strdup(line + 4);
		else if (!strncmp(line, "env ", 4) && strchr(line + 4, '=') &&
			 dflt_envc < MAX_DEFAULT_ENV)
			dflt_env[dflt_envc++] = strdup(line + 4);
	}
	fclose(f);
}

/* Put KEY=VALUE entries into env (n entries so far), each replacing one with the same KEY. */
static int overlay(char **env, int n, char **extra, int n_extra)
{
	for (int i = 0; i < n_extra; i++) {
		char *eq = strchr(extra[i], '=');
		size_t klen = eq ? (size_t)(eq - extra[i]) + 1 : strlen(extra[i]);
		int j;
		for (j = 0; j < n; j++)
			if (strncmp(env[j], extra[i], klen) == 0)
				break;
		env[j] = extra[i];
		if (j == n)
			n++;
	}
	return n;
}

/* Base environment, overlaid with the image's Env, then the request's entries (request
 * wins). A command run as another user than root gets HOME=/ and no USER/LOGNAME unless
 * the image or the request says otherwise. */
static char **build_env(char **extra, int n_extra, int64_t uid)
{
	static const char *root_base[] = {
	    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	    "HOME=/root", "USER=root", "LOGNAME=root", "LANG=C.UTF-8", "TERM=dumb", NULL};
	static const char *user_base[] = {
	    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/",
	    "LANG=C.UTF-8", "TERM=dumb", NULL};
	const char **base = uid > 0 ? user_base : root_base;
	char **env = calloc(8 + dflt_envc + n_extra, sizeof *env);
	int n = 0;
	for (int i = 0; base[i]; i++)
		env[n++] = (char *)base[i];
	n = overlay(env, n, dflt_env, dflt_envc);
	n = overlay(env, n, extra, n_extra);
	env[n] = NULL;
	return env;
}

/* build_env for procs.c. */
char **exec_build_env(char **extra, int n_extra, int64_t uid)
{
	return build_env(extra, n_extra, uid);
}

void exec_default_user(int64_t *uid, int64_t *gid)
{
	*uid = dflt_uid;
	*gid = dflt_gid;
}

/* Become uid:gid (root when both are <= 0); on failure says why on fd 2, -1. */
static int exec_become(int64_t uid, int64_t gid)
{
	if (uid <= 0 && gid <= 0)
		return 0;
	gid_t g = (gid_t)(gid > 0 ? gid : 0);
	if (setgroups(1, &g) != 0 || setgid(g) != 0 || setuid((uid_t)(uid > 0 ? uid : 0)) != 0) {
		dprintf(2, "pyro-agent: cannot run as %lld:%lld: %s\n", (long long)uid,
			(long long)gid, strerror(errno));
		return -1;
	}
	return 0;
}

/* execvp, but probing PATH with stat() first: a failed execve() sets up and tears down a whole
 * address space, which costs milliseconds per PATH entry under TCG. Returns only on failure. */
static void exec_search(char **argv, char **env)
{
	if (strchr(argv[0], '/')) {
		execve(argv[0], argv, env);
		return;
	}
	const char *path = NULL;
	for (char **e = env; *e; e++)
		if (!strncmp(*e, "PATH=", 5))
			path = *e + 5;
	if (!path)
		path = "/usr/local/bin:/bin:/usr/bin";
	int seen_eacces = 0;
	for (const char *p = path;; p++) {
		const char *end = strchrnul(p, ':');
		char cand[4096];
		int n = snprintf(cand, sizeof cand, "%.*s%s%s", (int)(end - p), p,
				 end == p ? "" : "/", argv[0]);
		struct stat st;
		if (n > 0 && (size_t)n < sizeof cand && stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
			execve(cand, argv, env);
			if (errno != EACCES)
				return;
			seen_eacces = 1;
		}
		if (!*end)
			break;
		p = end;
	}
	errno = seen_eacces ? EACCES : ENOENT;
}

void exec_child_reset(void)
{
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	for (int s = 1; s < NSIG; s++)
		signal(s, SIG_DFL);
	setsid();
}

void exec_child_run(char **argv, char **env, const char *cwd, int64_t uid, int64_t gid)
{
	if (exec_become(uid, gid) != 0)
		_exit(126);
	if (cwd && chdir(cwd) != 0) {
		dprintf(2, "pyro-agent: cannot change directory to %s: %s\n", cwd, strerror(errno));
		_exit(126);
	}
	exec_search(argv, env);
	int e = errno;
	dprintf(2, "pyro-agent: cannot run %s: %s\n", argv[0], strerror(e));
	_exit(e == ENOENT ? 127 : 126);
}

static void child(char **argv, char **env, const char *cwd, int64_t uid, int64_t gid, int in,
		  int out, int err)
{
	exec_child_reset();
	dup2(in, 0);
	dup2(out, 1);
	dup2(err, 2);
	exec_child_run(argv, env, cwd, uid, gid);
}

void exec_start(uint32_t id, const uint8_t *payload, uint32_t len)
{
	char *argv[4096 + 1], *envs[4096], *cwd = NULL;
	int argc = 0, envc = 0, has_stdin = 0, want_sync = 0, bad = 0, too_many = 0;
	int64_t timeout_ms = 0, uid = dflt_uid, gid = dflt_gid;
	uint64_t caps[2] = {1u << 20, 1u << 20};
	struct tlv_it it = {payload, payload + len};
	int tag, r;
	const uint8_t *val;
	uint32_t vlen;
	while ((r = tlv_next(&it, &tag, &val, &vlen)) == 1) {
		if (tag == G_ARG && argc == 4096)
			too_many = 1;
		else if (tag == G_ARG)
			bad |= !(argv[argc++] = tlv_as_str(val, vlen));
		else if (tag == G_ENV && envc == 4096)
			too_many = 1;
		else if (tag == G_ENV)
			bad |= !(envs[envc++] = tlv_as_str(val, vlen));
		else if (tag == G_CWD && !cwd)
			bad |= !(cwd = tlv_as_str(val, vlen));
		else if (tag == G_HAS_STDIN)
			has_stdin = tlv_as_int(val, vlen) != 0;
		else if (tag == G_TIMEOUT_MS)
			timeout_ms = tlv_as_int(val, vlen);
		else if (tag == G_STDOUT_CAP)
			caps[0] = (uint64_t)tlv_as_int(val, vlen);
		else if (tag == G_STDERR_CAP)
			caps[1] = (uint64_t)tlv_as_int(val, vlen);
		else if (tag == G_SYNC)
			want_sync = tlv_as_int(val, vlen) != 0;
		else if (tag == G_UID)
			uid = tlv_as_int(val, vlen);
		else if (tag == G_GID)
			gid = tlv_as_int(val, vlen);
	}
	if (!cwd && dflt_cwd)
		bad |= !(cwd = strdup(dflt_cwd));
	argv[argc] = NULL;
	struct exec *x = NULL;
	for (int i = 0; i < MAX_EXECS && !x; i++)
		if (!execs[i].used)
			x = &execs[i];
	int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
	if (r < 0 || bad || argc == 0 || !argv[0]) {
		send_error(id, EINVAL, "malformed EXEC request (argv must be non-empty, no NUL bytes)");
		goto out;
	}
	if (too_many) {
		send_error(id, E2BIG, "more than 4096 arguments or environment entries");
		goto out;
	}
	if (!x) {
		send_error(id, EAGAIN, "too many commands running at once (limit %d)", MAX_EXECS);
		goto out;
	}
	if ((has_stdin && pipe2(pin, O_CLOEXEC) != 0) || pipe2(pout, O_CLOEXEC) != 0 ||
	    pipe2(perr, O_CLOEXEC) != 0) {
		send_error(id, errno, "cannot create pipes: %s", strerror(errno));
		goto out;
	}
	if (!has_stdin) {
		pin[0] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (pin[0] < 0) {
			send_error(id, errno, "cannot open /dev/null: %s", strerror(errno));
			goto out;
		}
	}
	char **env = build_env(envs, envc, uid);
	pid_t pid = fork();
	if (pid == 0)
		child(argv, env, cwd, uid, gid, pin[0], pout[1], perr[1]);
	free(env);
	if (pid < 0) {
		send_error(id, errno, "cannot fork: %s", strerror(errno));
		goto out;
	}
	memset(x, 0, sizeof *x);
	x->used = 1;
	x->id = id;
	x->pid = pid;
	x->fd[0] = pin[1];
	x->fd[1] = pout[0];
	x->fd[2] = perr[0];
	pin[1] = pout[0] = perr[0] = -1;
	for (int i = 0; i < 3; i++)
		if (x->fd[i] >= 0)
			fcntl(x->fd[i], F_SETFL, O_NONBLOCK);
	x->start_ms = now_ms();
	x->deadline_ms = timeout_ms > 0 ? x->start_ms + timeout_ms : 0;
	x->cap[0] = caps[0];
	x->cap[1] = caps[1];
	x->sync = want_sync;
out:
	for (int i = 0; i < 2; i++) {
		close_fd(&pin[i]);
		close_fd(&pout[i]);
		close_fd(&perr[i]);
	}
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	for (int i = 0; i < envc; i++)
		free(envs[i]);
	free(cwd);
}

void exec_stdin(uint32_t id, const uint8_t *data, uint32_t len)
{
	struct exec *x = find(id);
	if (!x || x->stdin_eof)
		return; /* the command already finished or closed its input: drop it */
	if (len == 0)
		x->stdin_eof = 1;
	else
		buf_put(&x->in, data, len);
	if (x->stdin_eof && buf_pending(&x->in) == 0)
		close_fd(&x->fd[0]);
}

int exec_signal(uint32_t id, int sig)
{
	struct exec *x = find(id);
	if (!x)
		return -1;
	/* Right after fork the child may not have called setsid() yet: then signal it alone. */
	if (!x->exited && kill(-x->pid, sig) != 0)
		kill(x->pid, sig);
	return 0;
}

static void finish(struct exec *x)
{
	/* The command's writes reach the disk before the host hears it ended, so a task that is
	 * cut off (killed VMM) later keeps everything its finished commands wrote. */
	if (x->sync)
		sync();
	size_t f = frame_begin(&g_out, T_EXIT, x->id);
	if (WIFEXITED(x->status))
		tlv_int(&g_out, G_EXIT_CODE, WEXITSTATUS(x->status));
	else if (WIFSIGNALED(x->status))
		tlv_int(&g_out, G_SIGNAL, WTERMSIG(x->status));
	tlv_int(&g_out, G_TIMED_OUT, x->timed_out);
	tlv_int(&g_out, G_STDOUT_TRUNC, x->trunc[0]);
	tlv_int(&g_out, G_STDERR_TRUNC, x->trunc[1]);
	tlv_int(&g_out, G_DURATION_US, (x->exited_ms - x->start_ms) * 1000);
	frame_end(&g_out, f);
	for (int i = 0; i < 3; i++)
		close_fd(&x->fd[i]);
	free(x->in.p);
	x->used = 0;
}

static void maybe_finish(struct exec *x)
{
	if (x->exited && x->fd[1] < 0 && x->fd[2] < 0)
		finish(x);
}

void exec_reap(void)
{
	int status;
	pid_t pid;
	/* As PID 1 this also collects every orphan that was re-parented to us. */
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		proc_reaped(pid, status);
		for (int i = 0; i < MAX_EXECS; i++) {
			struct exec *x = &execs[i];
			if (x->used && x->pid == pid && !x->exited) {
				x->exited = 1;
				x->status = status;
				x->exited_ms = now_ms();
				close_fd(&x->fd[0]);
				maybe_finish(x);
			}
		}
	}
}

void exec_kill_all(void)
{
	/* The host went away: nobody will read these results, so stop the work. */
	for (int i = 0; i < MAX_EXECS; i++) {
		struct exec *x = &execs[i];
		if (!x->used)
			continue;
		if (!x->exited) {
			kill(-x->pid, SIGKILL);
			kill(x->pid, SIGKILL);
		}
		for (int j = 0; j < 3; j++)
			close_fd(&x->fd[j]);
		free(x->in.p);
		memset(x, 0, sizeof *x);
	}
}

int exec_poll_fds(struct pollfd *fds, int max, int output_ok)
{
	int n = 0;
	for (int i = 0; i < MAX_EXECS && n + 3 <= max; i++) {
		struct exec *x = &execs[i];
		if (!x->used)
			continue;
		if (x->fd[0] >= 0 && buf_pending(&x->in) > 0)
			fds[n++] = (struct pollfd){.fd = x->fd[0], .events = POLLOUT};
		for (int s = 1; s <= 2; s++)
			if (x->fd[s] >= 0 && output_ok)
				fds[n++] = (struct pollfd){.fd = x->fd[s], .events = POLLIN};
	}
	return n;
}

/* Reads once from stdout (s=1) or stderr (s=2); returns bytes read, 0 at EOF or when empty. */
static ssize_t pump_output(struct exec *x, int s)
{
	static uint8_t data[65536];
	ssize_t n = read(x->fd[s], data, sizeof data);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	if (n <= 0) {
		close_fd(&x->fd[s]);
		maybe_finish(x);
		return 0;
	}
	uint64_t room = x->cap[s - 1] > x->sent[s - 1] ? x->cap[s - 1] - x->sent[s - 1] : 0;
	size_t keep = (uint64_t)n < room ? (size_t)n : (size_t)room;
	if (keep < (size_t)n)
		x->trunc[s - 1] = 1; /* keep draining so the command never blocks on a full pipe */
	if (keep > 0) {
		size_t f = frame_begin(&g_out, s == 1 ? T_STDOUT : T_STDERR, x->id);
		buf_put(&g_out, data, keep);
		frame_end(&g_out, f);
		x->sent[s - 1] += keep;
	}
	return n;
}

/* Stdin flow control: OK with SIZE = the bytes the command has taken so far, so the host
 * keeps at most a window of unread stdin here; ERRNO=EPIPE: it closed its input, send no
 * more. Without it the agent would buffer whatever the host sends. */
static void ack_stdin(struct exec *x, int err)
{
	size_t f = frame_begin(&g_out, T_OK, x->id);
	tlv_int(&g_out, G_SIZE, (int64_t)x->in_done);
	if (err)
		tlv_int(&g_out, G_ERRNO, err);
	frame_end(&g_out, f);
	x->in_acked = x->in_done;
}

static void pump_stdin(struct exec *x)
{
	ssize_t n = write(x->fd[0], x->in.p + x->in.off, buf_pending(&x->in));
	if (n > 0) {
		buf_consume(&x->in, (size_t)n);
		x->in_done += (uint64_t)n;
		if (x->in_done - x->in_acked >= CHUNK_LEN || buf_pending(&x->in) == 0)
			ack_stdin(x, 0);
	} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
		x->stdin_eof = 1, buf_clear(&x->in); /* EPIPE: the command stopped reading */
		ack_stdin(x, EPIPE);
	}
	if (x->stdin_eof && buf_pending(&x->in) == 0)
		close_fd(&x->fd[0]);
}

void exec_handle(struct pollfd *fds, int n)
{
	for (int k = 0; k < n; k++) {
		if (!fds[k].revents)
			continue;
		for (int i = 0; i < MAX_EXECS; i++) {
			struct exec *x = &execs[i];
			if (!x->used)
				continue;
			if (x->fd[0] == fds[k].fd)
				pump_stdin(x);
			else if (x->fd[1] == fds[k].fd)
				pump_output(x, 1);
			else if (x->fd[2] == fds[k].fd)
				pump_output(x, 2);
			else
				continue;
			break;
		}
	}
}

int64_t exec_next_deadline(void)
{
	int64_t next = 0;
	for (int i = 0; i < MAX_EXECS; i++) {
		struct exec *x = &execs[i];
		int64_t d = 0;
		if (!x->used)
			continue;
		if (x->exited)
			d = x->exited_ms + DRAIN_GRACE_MS;
		else if (x->deadline_ms && !x->timed_out)
			d = x->deadline_ms;
		if (d && (!next || d < next))
			next = d;
	}
	return next;
}

void exec_timers(void)
{
	int64_t now = now_ms();
	for (int i = 0; i < MAX_EXECS; i++) {
		struct exec *x = &execs[i];
		if (!x->used)
			continue;
		if (!x->exited && x->deadline_ms && !x->timed_out && now >= x->deadline_ms) {
			/* The whole session's process group, so `sh -c 'a & b'` leaves nothing behind. */
			x->timed_out = 1;
			kill(-x->pid, SIGKILL);
			kill(x->pid, SIGKILL);
		} else if (x->exited && now >= x->exited_ms + DRAIN_GRACE_MS) {
			/* A background child still holds the pipes: take what is there, then report
			 * without waiting for it. */
			for (int s = 1; s <= 2; s++)
				for (int k = 0; k < 64 && x->fd[s] >= 0 && pump_output(x, s) > 0; k++)
					;
			if (!x->used)
				continue;
			close_fd(&x->fd[1]);
			close_fd(&x->fd[2]);
			maybe_finish(x);
		}
	}
}
