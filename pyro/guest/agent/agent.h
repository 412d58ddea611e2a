/* pyro guest agent: shared declarations.
 *
 * The agent is PID 1 of a tiny initramfs. It sets the guest up (boot.c), then serves the
 * host over one byte stream with the framed protocol in docs/agent-protocol.md (main.c).
 * Everything is single-threaded around one poll() loop, so no locking anywhere.
 */
#ifndef PYRO_AGENT_H
#define PYRO_AGENT_H

#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* 0.2.0: STDIN is acknowledged (OK with SIZE on the EXEC), see exec.c ack_stdin.
 * 0.3.0: persistent processes (SPAWN … REMOVE, procs.c) and PROBE (probe.c). */
#define AGENT_VERSION "0.3.0"
#define PROTO_VERSION 1

/* Frame header: 'P' 'Y' version type | id u32 LE | length u32 LE. */
#define HDR_LEN 12
#define MAX_PAYLOAD (1u << 20)
#define CHUNK_LEN (256u * 1024u)
/* Stop reading child output / file data while this much output waits for the host. */
#define OUT_HIGH (2u * 1024u * 1024u)

enum frame_type {
	T_HELLO = 0x01,
	T_EXEC = 0x02,
	T_STDIN = 0x03,
	T_SIGNAL = 0x04,
	T_CANCEL = 0x05,
	T_PUT = 0x06,
	T_CHUNK = 0x07, /* both directions: PUT data (host->guest), GET data (guest->host) */
	T_END = 0x08,   /* host->guest: end of PUT data */
	T_GET = 0x09,
	T_STAT = 0x0a,
	T_LIST = 0x0b,
	T_SHUTDOWN = 0x0c,
	T_MOUNT = 0x0d,
	T_SPAWN = 0x0e,  /* persistent processes (procs.c) */
	T_WRITE = 0x0f,
	T_READ = 0x10,
	T_RESIZE = 0x11,
	T_KILL = 0x12,
	T_PROCS = 0x13,
	T_REMOVE = 0x14,
	T_PROBE = 0x15,  /* probe.c */

	T_HELLO_OK = 0x81,
	T_STDOUT = 0x82,
	T_STDERR = 0x83,
	T_EXIT = 0x84,
	T_OK = 0x85,
	T_ERROR = 0x86,
	T_ENTRY = 0x87,
};

enum tag {
	G_MAGIC = 1,
	G_VERSION = 2,
	G_TIME_NS = 3,
	G_SEED = 4,
	G_HOSTNAME = 5,
	G_AGENT_VERSION = 6,
	G_KERNEL = 7,
	G_READY_MS = 8,
	G_UPTIME_MS = 9,
	G_ARG = 10,
	G_ENV = 11,
	G_CWD = 12,
	G_HAS_STDIN = 13,
	G_TIMEOUT_MS = 14,
	G_STDOUT_CAP = 15,
	G_STDERR_CAP = 16,
	G_SYNC = 17,
	G_EXIT_CODE = 20,
	G_SIGNAL = 21,
	G_TIMED_OUT = 22,
	G_STDOUT_TRUNC = 23,
	G_STDERR_TRUNC = 24,
	G_DURATION_US = 25,
	G_PATH = 30,
	G_MODE = 31,
	G_SIZE = 32,
	G_ERRNO = 33,
	G_MESSAGE = 34,
	G_NAME = 35,
	G_KIND = 36,
	G_MTIME_NS = 37,
	G_UID = 38,
	G_GID = 39,
	G_LINK = 40,
	G_SOURCE = 41,
	G_FSTYPE = 42,
	G_DATA = 43,
	G_READ_ONLY = 44,
	G_DIR = 45,
	G_PTY = 50,
	G_ROWS = 51,
	G_COLS = 52,
	G_CURSOR = 53,
	G_MAX = 54,
	G_WAIT_MS = 55,
	G_FIRST = 56,
	G_RUNNING = 57,
	G_PID = 58,
	G_EOF = 59,
	G_END = 60,
	G_RING = 61,
	G_PORT = 62,
	G_STATUS = 63,
};

/* Persistent processes (procs.c): limits on what the host may ask for. */
#define PROC_MAX 32
#define PROC_NAME_MAX 64
#define PROC_ARGS_MAX 4096
#define PROC_WAITERS_MAX 64
#define PROC_RING_DEFAULT (1u << 20)
#define PROC_RING_MIN 4096u
#define PROC_RING_MAX (16u << 20)
#define PROC_READ_MAX (512u * 1024u)
#define PROC_INPUT_MAX (1u << 20)
#define PROC_WAIT_MAX_MS 60000
#define PROC_WINSIZE_MAX 1000
#define PROBE_MAX_MS 2000

#define HELLO_MAGIC "pyro-agent-hello"

struct buf {
	uint8_t *p;
	size_t off; /* consumed prefix (output buffer only) */
	size_t len;
	size_t cap;
};

void buf_put(struct buf *b, const void *data, size_t n);
void buf_consume(struct buf *b, size_t n);
void buf_clear(struct buf *b);
size_t buf_pending(const struct buf *b);

/* Building frames into the output buffer. */
size_t frame_begin(struct buf *b, int type, uint32_t id);
void frame_end(struct buf *b, size_t start);
void tlv_bytes(struct buf *b, int tag, const void *v, size_t n);
void tlv_str(struct buf *b, int tag, const char *s);
void tlv_int(struct buf *b, int tag, int64_t v);

struct tlv_it {
	const uint8_t *p, *end;
};
/* Returns 1 and fills tag/val/len, 0 at the end, -1 on a malformed payload. */
int tlv_next(struct tlv_it *it, int *tag, const uint8_t **val, uint32_t *len);
int64_t tlv_as_int(const uint8_t *val, uint32_t len);
/* Copies a value into a NUL-terminated heap string (NULL if it holds a NUL byte). */
char *tlv_as_str(const uint8_t *val, uint32_t len);

uint32_t get_u32(const uint8_t *p);
void put_u32(uint8_t *p, uint32_t v);

/* main.c: the output buffer every module writes its frames to. */
extern struct buf g_out;
extern int g_init_mode;
int64_t now_ms(void);
void send_error(uint32_t id, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void send_ok_empty(uint32_t id);
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* boot.c */
void boot_setup(void);
int open_channel(int *is_listener);
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void apply_hello_host_state(int64_t time_ns, const uint8_t *seed, uint32_t seed_len,
			    const char *hostname);
void power_off(void) __attribute__((noreturn));

/* net.c */
void net_setup(void);
/* boot.c: value of `key=` on the kernel command line (heap copy), or NULL. */
char *cmdline_value(const char *key);

/* exec.c */
struct pollfd;
void exec_start(uint32_t id, const uint8_t *payload, uint32_t len);
/* Read an image environment's exec defaults (uid, gid, cwd, env lines); absent: none. */
#define IMAGE_DEFAULTS "/etc/pyro-image.conf"
void exec_load_defaults(const char *path);
void exec_stdin(uint32_t id, const uint8_t *data, uint32_t len);
int exec_signal(uint32_t id, int sig);
void exec_reap(void);
void exec_kill_all(void);
/* Adds poll entries; returns count. tags[i] tells exec_handle which fd it was. */
int exec_poll_fds(struct pollfd *fds, int max, int output_ok);
void exec_handle(struct pollfd *fds, int n);
int64_t exec_next_deadline(void);
void exec_timers(void);
int exec_busy(uint32_t id);
/* Base environment (root's, or a user's when uid > 0) overlaid with the image's Env and then
 * KEY=VALUE entries (heap array of borrowed strings). */
char **exec_build_env(char **extra, int n_extra, int64_t uid);
/* The user a request without UID/GID runs as: the image's, or -1 (root). */
void exec_default_user(int64_t *uid, int64_t *gid);
/* In a freshly forked child: default signals, empty mask, a session of its own. */
void exec_child_reset(void);
/* In a child, after its fds are in place: become uid:gid (root when both are <= 0), enter cwd,
 * exec argv (PATH from env); on failure says why on fd 2 and exits 126 (127: not found). */
__attribute__((noreturn)) void exec_child_run(char **argv, char **env, const char *cwd,
					      int64_t uid, int64_t gid);

/* procs.c */
void proc_spawn(uint32_t id, const uint8_t *payload, uint32_t len);
void proc_write(uint32_t id, const uint8_t *payload, uint32_t len);
void proc_read(uint32_t id, const uint8_t *payload, uint32_t len);
void proc_resize(uint32_t id, const uint8_t *payload, uint32_t len);
void proc_kill(uint32_t id, const uint8_t *payload, uint32_t len);
void proc_list(uint32_t id);
void proc_remove(uint32_t id, const uint8_t *payload, uint32_t len);
void proc_reaped(pid_t pid, int status);
void proc_drop_waiters(void);
int proc_busy(uint32_t id);
/* Ends a waiting READ of request id (ERROR ECANCELED); 0 when there was one. */
int proc_cancel(uint32_t id);
int proc_poll_fds(struct pollfd *fds, int max);
void proc_handle(struct pollfd *fds, int n);
int64_t proc_next_deadline(void);
void proc_timers(void);

/* probe.c */
void probe_request(uint32_t id, const uint8_t *payload, uint32_t len);

/* files.c */
void put_begin(uint32_t id, const uint8_t *payload, uint32_t len);
void put_chunk(uint32_t id, const uint8_t *data, uint32_t len);
void put_end(uint32_t id);
void get_begin(uint32_t id, const uint8_t *payload, uint32_t len);
int get_pump(void); /* returns 1 while GETs still have data to send */
int file_cancel(uint32_t id);
void files_drop_all(void);
void stat_path(uint32_t id, const uint8_t *payload, uint32_t len);
void list_dir(uint32_t id, const uint8_t *payload, uint32_t len);

/* mount.c */
void mount_request(uint32_t id, const uint8_t *payload, uint32_t len);
int file_busy(uint32_t id);

#endif
