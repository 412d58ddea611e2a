/* MOUNT: make folders, then mount a file system (the host's data disk, an overlay).
 * Done here rather than by running mkdir and mount: each program costs a noticeable time
 * under TCG. Never in test mode (it would mount on the host). */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DIRS 8

/* mkdir -p path, 0755. */
static int make_dirs(const char *path)
{
	char buf[4096];
	if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
		return errno = ENAMETOOLONG, -1;
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == 0) {
			char c = *p;
			*p = 0;
			if (mkdir(buf, 0755) != 0 && errno != EEXIST)
				return -1;
			*p = c;
			if (!c)
				return 0;
		}
	}
}

/* "serial:NAME": the virtio disk whose serial is NAME, as /dev/vdX (into out). */
static int disk_by_serial(const char *name, char *out, size_t n)
{
	DIR *d = opendir("/sys/block");
	struct dirent *e;
	int found = -1;
	while (d && (e = readdir(d)) && found) {
		char path[300], serial[128] = {0};
		if (strncmp(e->d_name, "vd", 2) != 0)
			continue;
		snprintf(path, sizeof path, "/sys/block/%s/serial", e->d_name);
		FILE *f = fopen(path, "re");
		if (!f)
			continue;
		if (fgets(serial, sizeof serial, f))
			serial[strcspn(serial, "\n")] = 0;
		fclose(f);
		if (strcmp(serial, name) == 0 && snprintf(out, n, "/dev/%s", e->d_name) < (int)n)
			found = 0;
	}
	if (d)
		closedir(d);
	return found;
}

void mount_request(uint32_t id, const uint8_t *payload, uint32_t len)
{
	struct tlv_it it = {payload, payload + len};
	int tag, r;
	const uint8_t *val;
	uint32_t vlen;
	char *target = NULL, *source = NULL, *fstype = NULL, *data = NULL, *dirs[MAX_DIRS];
	int ndirs = 0, ro = 0;
	while ((r = tlv_next(&it, &tag, &val, &vlen)) == 1) {
		if (tag == G_PATH && !target)
			target = tlv_as_str(val, vlen);
		else if (tag == G_SOURCE && !source)
			source = tlv_as_str(val, vlen);
		else if (tag == G_FSTYPE && !fstype)
			fstype = tlv_as_str(val, vlen);
		else if (tag == G_DATA && !data)
			data = tlv_as_str(val, vlen);
		else if (tag == G_READ_ONLY)
			ro = tlv_as_int(val, vlen) != 0;
		else if (tag == G_DIR && ndirs < MAX_DIRS && (dirs[ndirs] = tlv_as_str(val, vlen)))
			ndirs++;
	}
	char dev[64];
	const char *from = source;
	if (!g_init_mode) {
		send_error(id, EOPNOTSUPP, "mount is refused in test mode");
	} else if (r < 0 || !target || target[0] != '/' || !source || !fstype) {
		send_error(id, EINVAL, "mount needs an absolute PATH, a SOURCE and an FSTYPE");
	} else if (!strncmp(source, "serial:", 7) && disk_by_serial(source + 7, dev, sizeof dev)) {
		send_error(id, ENODEV, "no virtio disk with serial %s", source + 7);
	} else {
		if (!strncmp(source, "serial:", 7))
			from = dev;
		int i;
		for (i = 0; i < ndirs; i++)
			if ((dirs[i][0] != '/' && (errno = EINVAL)) || make_dirs(dirs[i]) != 0)
				break;
		if (i < ndirs)
			send_error(id, errno, "cannot make the folder %s: %s", dirs[i], strerror(errno));
		else if (make_dirs(target) != 0)
			send_error(id, errno, "cannot make the folder %s: %s", target, strerror(errno));
		else if (mount(from, target, fstype, MS_NOATIME | (ro ? MS_RDONLY : 0), data) != 0)
			send_error(id, errno, "cannot mount %s (%s) on %s: %s", from, fstype, target,
				   strerror(errno));
		else
			send_ok_empty(id);
	}
	for (int i = 0; i < ndirs; i++)
		free(dirs[i]);
	free(target);
	free(source);
	free(fstype);
	free(data);
}
