/* PUT (atomic: temp file + rename), GET (chunked), STAT and LIST. */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_XFERS 32

struct xfer {
	int used, is_put, fd, failed;
	uint32_t id;
	char *path, *tmp;
	mode_t mode;
	uint64_t size;
};

static struct xfer xfers[MAX_XFERS];

static struct xfer *find(uint32_t id)
{
	for (int i = 0; i < MAX_XFERS; i++)
		if (xfers[i].used && xfers[i].id == id)
			return &xfers[i];
	return NULL;
}

int file_busy(uint32_t id)
{
	return find(id) != NULL;
}

static void drop(struct xfer *x)
{
	if (x->fd >= 0)
		close(x->fd);
	if (x->tmp)
		unlink(x->tmp);
	free(x->path);
	free(x->tmp);
	memset(x, 0, sizeof *x);
	x->fd = -1;
}

void files_drop_all(void)
{
	for (int i = 0; i < MAX_XFERS; i++)
		if (xfers[i].used)
			drop(&xfers[i]);
}

/* The PATH (and MODE) of a request; NULL (error already sent) if missing or not absolute. */
static char *request_path(uint32_t id, const uint8_t *payload, uint32_t len, mode_t *mode)
{
	struct tlv_it it = {payload, payload + len};
	int tag, r;
	const uint8_t *val;
	uint32_t vlen;
	char *path = NULL;
	while ((r = tlv_next(&it, &tag, &val, &vlen)) == 1) {
		if (tag == G_PATH && !path)
			path = tlv_as_str(val, vlen);
		else if (tag == G_MODE && mode)
			*mode = (mode_t)tlv_as_int(val, vlen) & 07777;
	}
	if (r < 0 || !path || path[0] != '/') {
		send_error(id, EINVAL, "guest path %s must be absolute", path ? path : "(missing)");
		free(path);
		return NULL;
	}
	return path;
}

static struct xfer *new_xfer(uint32_t id)
{
	for (int i = 0; i < MAX_XFERS; i++)
		if (!xfers[i].used) {
			memset(&xfers[i], 0, sizeof xfers[i]);
			xfers[i].used = 1;
			xfers[i].id = id;
			xfers[i].fd = -1;
			return &xfers[i];
		}
	send_error(id, EAGAIN, "too many file transfers at once (limit %d)", MAX_XFERS);
	return NULL;
}

/* mkdir -p for every parent of path. */
static int make_parents(char *path)
{
	for (char *p = path + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		int r = mkdir(path, 0755);
		int e = errno;
		*p = '/';
		if (r != 0 && e != EEXIST)
			return errno = e, -1;
	}
	return 0;
}

void put_begin(uint32_t id, const uint8_t *payload, uint32_t len)
{
	mode_t mode = 0644;
	char *path = request_path(id, payload, len, &mode);
	if (!path)
		return;
	struct xfer *x = new_xfer(id);
	if (!x) {
		free(path);
		return;
	}
	x->is_put = 1;
	x->path = path;
	x->mode = mode;
	size_t n = strlen(path) + 64;
	x->tmp = malloc(n);
	char *slash = strrchr(path, '/');
	snprintf(x->tmp, n, "%.*s/.pyro-put.%u.%ld", (int)(slash - path), path, id,
		 (long)getpid());
	if (make_parents(path) != 0) {
		x->failed = 1;
		send_error(id, errno, "cannot create parent directories of %s: %s", path,
			   strerror(errno));
		free(x->tmp);
		x->tmp = NULL;
		return;
	}
	x->fd = open(x->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (x->fd < 0) {
		x->failed = 1;
		send_error(id, errno, "cannot write %s: %s", path, strerror(errno));
		free(x->tmp);
		x->tmp = NULL;
	}
}

void put_chunk(uint32_t id, const uint8_t *data, uint32_t len)
{
	struct xfer *x = find(id);
	if (!x || !x->is_put || x->failed)
		return;
	while (len > 0) {
		ssize_t n = write(x->fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			x->failed = 1;
			send_error(id, errno, "cannot write %s: %s", x->path, strerror(errno));
			return;
		}
		data += n;
		len -= (uint32_t)n;
		x->size += (uint64_t)n;
	}
}

void put_end(uint32_t id)
{
	struct xfer *x = find(id);
	if (!x || !x->is_put)
		return;
	if (!x->failed) {
		struct stat st;
		if (stat(x->path, &st) == 0 && S_ISDIR(st.st_mode)) {
			send_error(id, EISDIR, "cannot write %s: it is a directory", x->path);
		} else if (fchmod(x->fd, x->mode) != 0 || rename(x->tmp, x->path) != 0) {
			send_error(id, errno, "cannot write %s: %s", x->path, strerror(errno));
		} else {
			free(x->tmp);
			x->tmp = NULL; /* renamed: nothing to clean up */
			size_t f = frame_begin(&g_out, T_OK, id);
			tlv_int(&g_out, G_SIZE, (int64_t)x->size);
			frame_end(&g_out, f);
		}
	}
	drop(x);
}

void get_begin(uint32_t id, const uint8_t *payload, uint32_t len)
{
	char *path = request_path(id, payload, len, NULL);
	if (!path)
		return;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		send_error(id, errno, "cannot read %s: %s", path, strerror(errno));
	} else if (S_ISDIR(st.st_mode)) {
		send_error(id, EISDIR, "cannot read %s: it is a directory", path);
	} else {
		struct xfer *x = new_xfer(id);
		if (x) {
			x->fd = fd;
			x->path = path;
			return;
		}
	}
	if (fd >= 0)
		close(fd);
	free(path);
}

int get_pump(void)
{
	static uint8_t data[CHUNK_LEN];
	int active = 0;
	for (int i = 0; i < MAX_XFERS; i++) {
		struct xfer *x = &xfers[i];
		if (!x->used || x->is_put)
			continue;
		if (buf_pending(&g_out) >= OUT_HIGH)
			return 1;
		ssize_t n = read(x->fd, data, sizeof data);
		if (n < 0 && errno == EINTR) {
			active = 1;
		} else if (n < 0) {
			send_error(x->id, errno, "cannot read %s: %s", x->path, strerror(errno));
			drop(x);
		} else if (n == 0) {
			size_t f = frame_begin(&g_out, T_OK, x->id);
			tlv_int(&g_out, G_SIZE, (int64_t)x->size);
			frame_end(&g_out, f);
			drop(x);
			/* The main loop built its poll set before this OK was queued: without
			 * another turn it would block with the frame unsent (small files). */
			active = 1;
		} else {
			size_t f = frame_begin(&g_out, T_CHUNK, x->id);
			buf_put(&g_out, data, (size_t)n);
			frame_end(&g_out, f);
			x->size += (uint64_t)n;
			active = 1;
		}
	}
	return active;
}

int file_cancel(uint32_t id)
{
	struct xfer *x = find(id);
	if (!x)
		return -1;
	send_error(id, ECANCELED, "transfer of %s cancelled", x->path);
	drop(x);
	return 0;
}

static void stat_tlvs(const char *path, const char *name, const struct stat *st)
{
	char kind = S_ISREG(st->st_mode)	? 'f'
		    : S_ISDIR(st->st_mode)	? 'd'
		    : S_ISLNK(st->st_mode)	? 'l'
		    : S_ISCHR(st->st_mode)	? 'c'
		    : S_ISBLK(st->st_mode)	? 'b'
		    : S_ISFIFO(st->st_mode) ? 'p'
		    : S_ISSOCK(st->st_mode) ? 's'
					    : '?';
	tlv_str(&g_out, G_NAME, name);
	tlv_bytes(&g_out, G_KIND, &kind, 1);
	tlv_int(&g_out, G_MODE, st->st_mode & 07777);
	tlv_int(&g_out, G_SIZE, st->st_size);
	tlv_int(&g_out, G_MTIME_NS,
		(int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec);
	tlv_int(&g_out, G_UID, st->st_uid);
	tlv_int(&g_out, G_GID, st->st_gid);
	if (S_ISLNK(st->st_mode)) {
		char target[4096];
		ssize_t n = readlink(path, target, sizeof target - 1);
		if (n >= 0) {
			target[n] = 0;
			tlv_str(&g_out, G_LINK, target);
		}
	}
}

void stat_path(uint32_t id, const uint8_t *payload, uint32_t len)
{
	char *path = request_path(id, payload, len, NULL);
	if (!path)
		return;
	struct stat st;
	if (lstat(path, &st) != 0) {
		send_error(id, errno, "cannot stat %s: %s", path, strerror(errno));
	} else {
		const char *slash = strrchr(path, '/');
		size_t f = frame_begin(&g_out, T_OK, id);
		stat_tlvs(path, slash[1] ? slash + 1 : "/", &st);
		frame_end(&g_out, f);
	}
	free(path);
}

void list_dir(uint32_t id, const uint8_t *payload, uint32_t len)
{
	char *path = request_path(id, payload, len, NULL);
	if (!path)
		return;
	DIR *d = opendir(path);
	if (!d) {
		send_error(id, errno, "cannot list %s: %s", path, strerror(errno));
		free(path);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		char full[8192];
		snprintf(full, sizeof full, "%s/%s", strcmp(path, "/") ? path : "", e->d_name);
		struct stat st;
		if (lstat(full, &st) != 0)
			continue; /* vanished while listing */
		size_t f = frame_begin(&g_out, T_ENTRY, id);
		stat_tlvs(full, e->d_name, &st);
		frame_end(&g_out, f);
	}
	closedir(d);
	free(path);
	send_ok_empty(id);
}
