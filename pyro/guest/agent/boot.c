/* PID 1 set-up: mount the root filesystem, switch into it, find the host channel. */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Not in musl's headers (no linux/ uapi headers in a musl-only toolchain). */
#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif
#define VMADDR_CID_ANY 0xffffffffu
#define VSOCK_PORT 1024
#define RNDADDENTROPY 0x40085203
#define RNDRESEEDCRNG 0x5207 /* _IO('R', 0x07) */

struct sockaddr_vm_compat {
	unsigned short svm_family;
	unsigned short svm_reserved1;
	unsigned int svm_port;
	unsigned int svm_cid;
	unsigned char svm_zero[4];
};

#define PORT_NAME "org.pyro.agent"

void fatal(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	dprintf(2, "pyro-agent: FATAL: %s\n", msg);
	if (!g_init_mode)
		exit(1);
	/* As PID 1 an exit would panic the kernel; a reboot ends the VM just as surely (see
	 * power_off) and keeps the serial log readable. */
	sync();
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

void power_off(void)
{
	if (!g_init_mode)
		exit(0);
	kill(-1, SIGKILL);
	sync();
	mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
	/* Without ACPI (microvm acpi=off) power-off only halts the CPU; a reboot ends the VM
	 * because QEMU runs with -no-reboot and Firecracker exits on a guest reset. */
	reboot(RB_AUTOBOOT);
	for (;;)
		pause();
}

static void must_mount(const char *src, const char *dst, const char *type, unsigned long flags,
		       const char *data)
{
	mkdir(dst, 0755);
	if (mount(src, dst, type, flags, data) != 0 && errno != EBUSY)
		fatal("cannot mount %s (%s) on %s: %s", src, type, dst, strerror(errno));
}

static void try_mount(const char *src, const char *dst, const char *type, unsigned long flags,
		      const char *data, mode_t mode)
{
	struct stat st;
	if (stat(dst, &st) != 0 && mkdir(dst, mode) != 0)
		return; /* a read-only root without the directory: go without */
	if (mount(src, dst, type, flags, data) != 0)
		logmsg("cannot mount %s on %s: %s", type, dst, strerror(errno));
}

/* Value of `key=` on the kernel command line (a heap copy the caller frees), or NULL. */
char *cmdline_value(const char *key)
{
	char line[4096];
	int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	ssize_t n = read(fd, line, sizeof line - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	line[n] = 0;
	size_t klen = strlen(key);
	char *save = NULL;
	for (char *tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
		if (strncmp(tok, key, klen) == 0 && tok[klen] == '=')
			return strdup(tok + klen + 1);
	}
	return NULL;
}

static void wait_for_path(const char *path, int ms)
{
	struct stat st;
	for (int waited = 0; waited < ms && stat(path, &st) != 0; waited += 10) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}

static void loopback_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		ioctl(s, SIOCSIFFLAGS, &ifr);
	}
	close(s);
}

static int trace_boot;

/* With pyro.debug=1 on the kernel command line: where the boot time goes. */
static void trace(const char *what)
{
	if (!trace_boot)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	logmsg("%ld.%03ld %s", (long)ts.tv_sec, ts.tv_nsec / 1000000, what);
}

void boot_setup(void)
{
	struct timespec started;
	clock_gettime(CLOCK_BOOTTIME, &started); /* before /proc tells us whether to trace */
	umask(022);
	must_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
	must_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
	must_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);

	char *debug = cmdline_value("pyro.debug");
	trace_boot = debug && strcmp(debug, "0") != 0;
	if (trace_boot)
		logmsg("%ld.%03ld agent started", (long)started.tv_sec, started.tv_nsec / 1000000);
	trace("api filesystems mounted");
	char *root = cmdline_value("pyro.root");
	char *fstype = cmdline_value("pyro.rootfstype");
	if (!root)
		root = "/dev/vda";
	if (!fstype)
		fstype = "ext4";
	wait_for_path(root, 5000);
	trace("root device present");
	mkdir("/newroot", 0755);
	if (mount(root, "/newroot", fstype, MS_NOATIME, NULL) != 0)
		fatal("cannot mount root filesystem %s (%s) on /newroot: %s (set pyro.root= on the "
		      "kernel command line to choose the device)",
		      root, fstype, strerror(errno));

	/* Like switch_root: carry the API filesystems over, move the new root onto /, chroot. */
	trace("root filesystem mounted");
	const char *moves[] = {"/dev", "/proc", "/sys"};
	for (size_t i = 0; i < 3; i++) {
		char dst[64];
		snprintf(dst, sizeof dst, "/newroot%s", moves[i]);
		mkdir(dst, 0755);
		if (mount(moves[i], dst, NULL, MS_MOVE, NULL) != 0)
			fatal("cannot move %s into the root filesystem: %s", moves[i],
			      strerror(errno));
	}
	if (chdir("/newroot") != 0 || mount(".", "/", NULL, MS_MOVE, NULL) != 0 ||
	    chroot(".") != 0 || chdir("/") != 0)
		fatal("cannot switch into the root filesystem: %s", strerror(errno));

	try_mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777);
	try_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", 0755);
	try_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666",
		  0755);
	try_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", 01777);
	if (symlink("/proc/self/fd", "/dev/fd") != 0 && errno != EEXIST)
		logmsg("cannot link /dev/fd: %s", strerror(errno));

	sethostname("pyro", 4);
	loopback_up();
	net_setup(); /* net.c: eth0 from pyro.net= when the VM has a network */
	trace("switched root");
}

/* /dev/vportNpM of the virtio-serial port named org.pyro.agent, or -1 if there is none. */
static int open_named_port(void)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	if (!d)
		return -1;
	struct dirent *e;
	int fd = -1;
	while (fd < 0 && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		char path[300], name[64] = {0};
		snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
		int nf = open(path, O_RDONLY | O_CLOEXEC);
		if (nf < 0)
			continue;
		ssize_t n = read(nf, name, sizeof name - 1);
		close(nf);
		if (n > 0 && name[n - 1] == '\n')
			name[n - 1] = 0;
		if (strcmp(name, PORT_NAME) != 0)
			continue;
		snprintf(path, sizeof path, "/dev/%s", e->d_name);
		wait_for_path(path, 2000);
		fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
		if (fd < 0)
			fatal("cannot open %s: %s", path, strerror(errno));
	}
	closedir(d);
	return fd;
}

/* True if a virtio console device exists (virtio device id 3): then the port will show up. */
static int have_virtio_console(void)
{
	DIR *d = opendir("/sys/bus/virtio/devices");
	if (!d)
		return 0;
	struct dirent *e;
	int found = 0;
	while (!found && (e = readdir(d))) {
		char path[300], id[32] = {0};
		snprintf(path, sizeof path, "/sys/bus/virtio/devices/%s/device", e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		if (read(fd, id, sizeof id - 1) > 0 && strtol(id, NULL, 0) == 3)
			found = 1;
		close(fd);
	}
	closedir(d);
	return found;
}

int open_channel(int *is_listener)
{
	int fd = open_named_port();
	trace(fd >= 0 ? "port found" : "port not found yet");
	/* The port's name arrives from the host a little after the device probes. */
	for (int waited = 0; fd < 0 && waited < 3000 && have_virtio_console(); waited += 5) {
		struct timespec ts = {0, 5 * 1000 * 1000};
		nanosleep(&ts, NULL);
		fd = open_named_port();
	}
	if (fd >= 0) {
		*is_listener = 0;
		return fd;
	}
	int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		fatal("no virtio-serial port named %s and no vsock: %s", PORT_NAME,
		      strerror(errno));
	struct sockaddr_vm_compat addr;
	memset(&addr, 0, sizeof addr);
	addr.svm_family = AF_VSOCK;
	addr.svm_port = VSOCK_PORT;
	addr.svm_cid = VMADDR_CID_ANY;
	if (bind(s, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(s, 4) != 0)
		fatal("cannot listen on vsock port %d: %s", VSOCK_PORT, strerror(errno));
	*is_listener = 1;
	return s;
}

void apply_hello_host_state(int64_t time_ns, const uint8_t *seed, uint32_t seed_len,
			    const char *hostname)
{
	if (!g_init_mode)
		return; /* test mode on a host: never touch the host's clock, RNG or name */
	if (time_ns > 0) {
		struct timespec ts = {time_ns / 1000000000, time_ns % 1000000000};
		if (clock_settime(CLOCK_REALTIME, &ts) != 0)
			logmsg("cannot set the clock: %s", strerror(errno));
	}
	if (seed_len > 0 && seed_len <= 4096) {
		struct {
			int entropy_count;
			int buf_size;
			uint8_t buf[4096];
		} ent;
		ent.entropy_count = (int)seed_len * 8;
		ent.buf_size = (int)seed_len;
		memcpy(ent.buf, seed, seed_len);
		int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
		if (fd >= 0) {
			if (ioctl(fd, RNDADDENTROPY, &ent) != 0)
				logmsg("cannot seed the RNG: %s", strerror(errno));
			/* Once the CRNG is ready, new entropy only reaches it at the next timed
			 * reseed; a VM restored from a snapshot must not repeat its sibling's
			 * random bytes, so reseed now. */
			else if (ioctl(fd, RNDRESEEDCRNG) != 0)
				logmsg("cannot reseed the RNG: %s", strerror(errno));
			close(fd);
		}
	}
	if (hostname && *hostname) {
		if (sethostname(hostname, strlen(hostname)) != 0)
			logmsg("cannot set hostname: %s", strerror(errno));
	}
}
