/* pyro guest agent: entry point, connection handling, frame parsing and dispatch.
 *
 * Modes:
 *   PID 1 (no arguments)      set the guest up (boot.c), then serve the virtio-serial port
 *                             org.pyro.agent, or AF_VSOCK port 1024 if there is no such port.
 *   --listen-unix PATH        test mode on a host: serve connections on a unix socket.
 *   --serve-fd N              test mode: serve one already-connected stream, exit at its end.
 * Test modes skip every change to the system (mounts, clock, RNG, hostname, power-off).
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

struct buf g_out;
int g_init_mode;

static struct buf in;
static int synced;        /* a valid HELLO was seen on this connection */
static int conn = -1;     /* the stream we serve, -1 while no host is connected */
static int listener = -1; /* unix or vsock listening socket; -1 with a virtio-serial port */
static int port = -1;     /* the virtio-serial port fd (stays open across host reconnects) */
static int exit_on_eof;   /* --serve-fd */
static int64_t ready_ms;
static int port_async; /* the port signals host (dis)connects with SIGIO */
/* When the port's host went away with the session kept (see disconnect); 0 otherwise. */
static int64_t hung_up_ms;
#define HANGUP_GRACE_MS 2000

int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t uptime_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void logmsg(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	dprintf(2, "pyro-agent: %s\n", msg);
}

void send_error(uint32_t id, int err, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	size_t f = frame_begin(&g_out, T_ERROR, id);
	tlv_int(&g_out, G_ERRNO, err);
	tlv_str(&g_out, G_MESSAGE, msg);
	frame_end(&g_out, f);
}

void send_ok_empty(uint32_t id)
{
	frame_end(&g_out, frame_begin(&g_out, T_OK, id));
}

/* Forget everything tied to the host connection: its commands, transfers and bytes. */
static void reset_session(void)
{
	exec_kill_all();
	files_drop_all();
	proc_drop_waiters(); /* persistent processes stay; only the reads waiting for them go */
	buf_clear(&in);
	buf_clear(&g_out);
	synced = 0;
}

static void disconnect(void)
{
	if (conn >= 0 && conn == port) {
		/* The port reports hang-ups in its control queue, which the guest may handle
		 * after data the next host already sent: the HELLO just read (and answered) can
		 * be the next host's, followed by the hang-up of the previous one. So the port
		 * keeps the session (and its pending output) for HANGUP_GRACE_MS: a host that
		 * comes back gets it, a new host's HELLO starts over anyway, and
		 * end_abandoned_session() drops it when nobody comes. */
		conn = -1;
		hung_up_ms = now_ms();
		return;
	}
	reset_session();
	if (conn >= 0 && conn != port)
		close(conn);
	conn = -1;
	if (exit_on_eof)
		exit(0);
}

static void hello(uint32_t id, const uint8_t *payload, uint32_t len)
{
	struct tlv_it it = {payload, payload + len};
	int tag;
	const uint8_t *val, *seed = NULL;
	uint32_t vlen, seed_len = 0;
	int64_t time_ns = 0;
	char *hostname = NULL;
	while (tlv_next(&it, &tag, &val, &vlen) == 1) {
		if (tag == G_TIME_NS)
			time_ns = tlv_as_int(val, vlen);
		else if (tag == G_SEED)
			seed = val, seed_len = vlen;
		else if (tag == G_HOSTNAME && !hostname)
			hostname = tlv_as_str(val, vlen);
	}
	apply_hello_host_state(time_ns, seed, seed_len, hostname);
	free(hostname);
	struct utsname u;
	uname(&u);
	size_t f = frame_begin(&g_out, T_HELLO_OK, id);
	tlv_int(&g_out, G_VERSION, PROTO_VERSION);
	tlv_str(&g_out, G_AGENT_VERSION, AGENT_VERSION);
	tlv_str(&g_out, G_KERNEL, u.release);
	tlv_int(&g_out, G_READY_MS, ready_ms);
	tlv_int(&g_out, G_UPTIME_MS, uptime_ms());
	frame_end(&g_out, f);
}

static int valid_hello(const uint8_t *payload, uint32_t len)
{
	struct tlv_it it = {payload, payload + len};
	int tag;
	const uint8_t *val;
	uint32_t vlen;
	while (tlv_next(&it, &tag, &val, &vlen) == 1)
		if (tag == G_MAGIC)
			return vlen == strlen(HELLO_MAGIC) && !memcmp(val, HELLO_MAGIC, vlen);
	return 0;
}

static void flush_blocking(int ms)
{
	int64_t until = now_ms() + ms;
	while (conn >= 0 && buf_pending(&g_out) > 0 && now_ms() < until) {
		struct pollfd p = {.fd = conn, .events = POLLOUT};
		poll(&p, 1, 50);
		ssize_t n = write(conn, g_out.p + g_out.off, buf_pending(&g_out));
		if (n > 0)
			buf_consume(&g_out, (size_t)n);
		else if (n < 0 && errno != EAGAIN && errno != EINTR)
			break;
	}
}

static void dispatch(int type, uint32_t id, const uint8_t *p, uint32_t len)
{
	int busy = exec_busy(id) || file_busy(id) || proc_busy(id);
	switch (type) {
	case T_HELLO:
		/* A new host without a hang-up in between: start over for it (keeping the
		 * input that follows this HELLO). */
		exec_kill_all();
		files_drop_all();
		proc_drop_waiters();
		buf_clear(&g_out);
		synced = 1;
		hello(id, p, len);
		return;
	case T_EXEC:
		if (busy)
			send_error(id, EBUSY, "request id %u is already in use", id);
		else
			exec_start(id, p, len);
		return;
	case T_STDIN:
		exec_stdin(id, p, len);
		return;
	case T_SIGNAL: {
		struct tlv_it it = {p, p + len};
		int tag, sig = SIGTERM;
		const uint8_t *val;
		uint32_t vlen;
		while (tlv_next(&it, &tag, &val, &vlen) == 1)
			if (tag == G_SIGNAL)
				sig = (int)tlv_as_int(val, vlen);
		exec_signal(id, sig); /* no reply: the effect shows in the command's EXIT */
		return;
	}
	case T_CANCEL:
		if (exec_signal(id, SIGKILL) != 0 && proc_cancel(id) != 0)
			file_cancel(id);
		return;
	case T_PUT:
		if (busy)
			send_error(id, EBUSY, "request id %u is already in use", id);
		else
			put_begin(id, p, len);
		return;
	case T_CHUNK:
		put_chunk(id, p, len);
		return;
	case T_END:
		put_end(id);
		return;
	case T_GET:
		if (busy)
			send_error(id, EBUSY, "request id %u is already in use", id);
		else
			get_begin(id, p, len);
		return;
	case T_STAT:
		stat_path(id, p, len);
		return;
	case T_LIST:
		list_dir(id, p, len);
		return;
	case T_MOUNT:
		mount_request(id, p, len);
		return;
	case T_SPAWN:
		proc_spawn(id, p, len);
		return;
	case T_WRITE:
		proc_write(id, p, len);
		return;
	case T_READ:
		if (busy)
			send_error(id, EBUSY, "request id %u is already in use", id);
		else
			proc_read(id, p, len);
		return;
	case T_RESIZE:
		proc_resize(id, p, len);
		return;
	case T_KILL:
		proc_kill(id, p, len);
		return;
	case T_PROCS:
		proc_list(id);
		return;
	case T_REMOVE:
		proc_remove(id, p, len);
		return;
	case T_PROBE:
		probe_request(id, p, len);
		return;
	case T_SHUTDOWN:
		sync();
		send_ok_empty(id);
		flush_blocking(1000);
		power_off();
	default:
		send_error(id, ENOSYS, "unknown frame type 0x%02x", type);
	}
}

static void parse_input(void)
{
	static const uint8_t sync_pat[4] = {'P', 'Y', PROTO_VERSION, T_HELLO};
	for (;;) {
		const uint8_t *p = in.p + in.off;
		size_t avail = buf_pending(&in);
		if (!synced) {
			/* Skip to the next thing that looks like a HELLO header. */
			const uint8_t *hit = avail >= 4 ? memmem(p, avail, sync_pat, 4) : NULL;
			if (!hit) {
				buf_consume(&in, avail > 3 ? avail - 3 : 0);
				return;
			}
			buf_consume(&in, (size_t)(hit - p));
			p = hit;
			avail = buf_pending(&in);
		}
		if (avail < HDR_LEN)
			return;
		uint32_t len = get_u32(p + 8);
		if (p[0] != 'P' || p[1] != 'Y' || p[2] != PROTO_VERSION || len > MAX_PAYLOAD) {
			logmsg("bad frame header from the host; waiting for the next HELLO");
			synced = 0;
			buf_consume(&in, 1);
			continue;
		}
		if (avail < HDR_LEN + len)
			return;
		int type = p[3];
		uint32_t id = get_u32(p + 4);
		const uint8_t *payload = p + HDR_LEN;
		if (synced || (type == T_HELLO && valid_hello(payload, len)))
			dispatch(type, id, payload, len);
		buf_consume(&in, HDR_LEN + len);
	}
}

static void read_input(void)
{
	static uint8_t data[65536];
	ssize_t n = read(conn, data, sizeof data);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		disconnect();
		return;
	}
	buf_put(&in, data, (size_t)n);
	parse_input();
}

static void write_output(void)
{
	ssize_t n = write(conn, g_out.p + g_out.off, buf_pending(&g_out));
	if (n > 0)
		buf_consume(&g_out, (size_t)n);
	else if (n < 0 && errno != EAGAIN && errno != EINTR)
		disconnect();
}

static int listen_unix(const char *path)
{
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof a.sun_path)
		fatal("socket path too long: %s", path);
	strcpy(a.sun_path, path);
	unlink(path);
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 4) != 0)
		fatal("cannot listen on %s: %s", path, strerror(errno));
	return s;
}

/* No host came back to the port within HANGUP_GRACE_MS: drop the session it left. */
static void end_abandoned_session(void)
{
	if (hung_up_ms && conn < 0 && now_ms() - hung_up_ms >= HANGUP_GRACE_MS) {
		hung_up_ms = 0;
		reset_session();
	}
}

/* The port reads as end-of-file and polls POLLHUP while no host is connected. */
static int port_host_connected(void)
{
	struct pollfd p = {.fd = port, .events = POLLIN};
	return poll(&p, 1, 0) >= 0 && !(p.revents & POLLHUP);
}

static void serve(int sigfd)
{
	for (;;) {
		struct pollfd fds[256];
		int n = 0;
		fds[n++] = (struct pollfd){.fd = sigfd, .events = POLLIN};
		int lidx = -1, cidx = -1;
		if (listener >= 0) {
			lidx = n;
			fds[n++] = (struct pollfd){.fd = listener, .events = POLLIN};
		}
		if (conn < 0 && port >= 0 && port_host_connected()) {
			conn = port;
			hung_up_ms = 0;
		}
		if (conn >= 0) {
			cidx = n;
			short ev = POLLIN;
			if (buf_pending(&g_out) > 0)
				ev |= POLLOUT;
			fds[n++] = (struct pollfd){.fd = conn, .events = ev};
		}
		int first_proc = n;
		n += proc_poll_fds(fds + n, 256 - n);
		int first_exec = n;
		n += exec_poll_fds(fds + n, 256 - n, buf_pending(&g_out) < OUT_HIGH);

		int timeout = -1;
		int64_t deadline = exec_next_deadline();
		int64_t proc_deadline = proc_next_deadline();
		if (proc_deadline && (!deadline || proc_deadline < deadline))
			deadline = proc_deadline;
		if (deadline) {
			int64_t d = deadline - now_ms();
			timeout = d < 0 ? 0 : (int)d;
		}
		/* The port raises SIGIO when a host connects; poll anyway in case it cannot. */
		int recheck = port_async ? 1000 : 20;
		if (conn < 0 && port >= 0 && (timeout < 0 || timeout > recheck))
			timeout = recheck;
		if (hung_up_ms && conn < 0) {
			int64_t left = hung_up_ms + HANGUP_GRACE_MS - now_ms();
			if (timeout < 0 || timeout > left)
				timeout = left < 0 ? 0 : (int)left;
		}
		if (get_pump() && buf_pending(&g_out) < OUT_HIGH)
			timeout = 0;

		if (poll(fds, (nfds_t)n, timeout) < 0 && errno != EINTR)
			fatal("poll: %s", strerror(errno));
		if (fds[0].revents) {
			struct signalfd_siginfo si;
			while (read(sigfd, &si, sizeof si) > 0) {
			}
			exec_reap();
		}
		if (lidx >= 0 && fds[lidx].revents) {
			int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (c >= 0) {
				if (conn >= 0)
					disconnect(); /* a new host replaces the old one */
				conn = c;
			}
		}
		if (cidx >= 0 && conn == fds[cidx].fd && fds[cidx].revents) {
			if (fds[cidx].revents & (POLLIN | POLLHUP | POLLERR))
				read_input();
			if (conn >= 0 && (fds[cidx].revents & POLLOUT))
				write_output();
		}
		proc_handle(fds + first_proc, first_exec - first_proc);
		exec_handle(fds + first_exec, n - first_exec);
		exec_timers();
		proc_timers();
		exec_reap();
		end_abandoned_session();
		if ((conn < 0 && !hung_up_ms) || !synced)
			buf_clear(&g_out); /* nobody to read it */
		else if (conn >= 0 && buf_pending(&g_out) > 0)
			write_output();
	}
}

int main(int argc, char **argv)
{
	g_init_mode = getpid() == 1;
	const char *unix_path = NULL;
	int serve_fd = -1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--listen-unix") && i + 1 < argc)
			unix_path = argv[++i];
		else if (!strcmp(argv[i], "--serve-fd") && i + 1 < argc)
			serve_fd = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--version")) {
			printf("pyro-agent %s protocol %d\n", AGENT_VERSION, PROTO_VERSION);
			return 0;
		} else if (!g_init_mode) {
			dprintf(2, "usage: %s --listen-unix PATH | --serve-fd N | --version\n",
				argv[0]);
			return 2;
		}
	}
	if (g_init_mode && (unix_path || serve_fd >= 0))
		g_init_mode = 0; /* explicit test mode even as PID 1 of a container */
	if (!g_init_mode && !unix_path && serve_fd < 0) {
		dprintf(2, "pyro-agent: not PID 1; use --listen-unix PATH or --serve-fd N\n");
		return 2;
	}

	signal(SIGPIPE, SIG_IGN);
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGIO);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	int sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd < 0)
		fatal("signalfd: %s", strerror(errno));

	if (g_init_mode) {
		boot_setup();
		exec_load_defaults(IMAGE_DEFAULTS);
		setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
		setenv("HOME", "/root", 1);
		chdir("/");
		int is_listener = 0;
		int fd = open_channel(&is_listener);
		if (is_listener) {
			listener = fd;
		} else {
			port = fd;
			port_async = fcntl(port, F_SETOWN, getpid()) == 0 &&
				     fcntl(port, F_SETFL, fcntl(port, F_GETFL) | O_ASYNC) == 0;
		}
	} else {
		/* Collect orphans like PID 1 would, so tests see the same reaping. */
		prctl(PR_SET_CHILD_SUBREAPER, 1);
		if (unix_path)
			listener = listen_unix(unix_path);
		else {
			conn = serve_fd;
			exit_on_eof = 1;
			fcntl(conn, F_SETFL, fcntl(conn, F_GETFL) | O_NONBLOCK);
		}
	}
	ready_ms = uptime_ms();
	if (g_init_mode)
		logmsg("ready after %lld ms (%s)", (long long)ready_ms,
		       listener >= 0 ? "vsock port 1024" : "virtio-serial org.pyro.agent");
	serve(sigfd);
	return 0;
}
