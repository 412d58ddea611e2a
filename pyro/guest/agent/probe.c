/* PROBE: is something listening on a guest port (and does an HTTP path answer < 400)?
 * Readiness checks for services, done by the agent because images may have no curl or nc.
 * The check blocks the agent's loop for at most PROBE_MAX_MS; it only ever talks to
 * 127.0.0.1 inside the guest.
 */
#include "agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PATH_LEN_MAX 1024

/* Waits for events on s until deadline; 0 when they came, else errno (ETIMEDOUT). */
static int wait_for(int s, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return ETIMEDOUT;
		struct pollfd p = {.fd = s, .events = events};
		int r = poll(&p, 1, (int)left);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return errno;
	}
}

static int valid_path(const char *s)
{
	if (s[0] != '/' || strlen(s) > PATH_LEN_MAX)
		return 0;
	for (const char *c = s; *c; c++)
		if (*c <= ' ' || *c >= 127)
			return 0;
	return 1;
}

/* The status of an HTTP answer on s, or -errno. */
static int http_status(int s, int port, const char *path, int64_t deadline)
{
	char req[PATH_LEN_MAX + 128];
	int n = snprintf(req, sizeof req,
			 "GET %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n", path,
			 port);
	for (int sent = 0; sent < n;) {
		int e = wait_for(s, POLLOUT, deadline);
		if (e)
			return -e;
		ssize_t k = send(s, req + sent, (size_t)(n - sent), MSG_NOSIGNAL);
		if (k < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		if (k > 0)
			sent += (int)k;
	}
	char got[64];
	size_t have = 0;
	while (have < sizeof got - 1 && !memchr(got, '\n', have)) {
		int e = wait_for(s, POLLIN, deadline);
		if (e)
			return -e;
		ssize_t k = recv(s, got + have, sizeof got - 1 - have, 0);
		if (k == 0)
			break;
		if (k < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		if (k > 0)
			have += (size_t)k;
	}
	got[have] = 0;
	int status;
	if (sscanf(got, "HTTP/%*d.%*d %3d", &status) != 1 || status < 100 || status > 999)
		return -EPROTO;
	return status;
}

void probe_request(uint32_t id, const uint8_t *payload, uint32_t len)
{
	struct tlv_it it = {payload, payload + len};
	int tag, r;
	const uint8_t *val;
	uint32_t vlen;
	int64_t port = 0, timeout = 1000;
	char *path = NULL;
	while ((r = tlv_next(&it, &tag, &val, &vlen)) == 1) {
		if (tag == G_PORT)
			port = tlv_as_int(val, vlen);
		else if (tag == G_TIMEOUT_MS)
			timeout = tlv_as_int(val, vlen);
		else if (tag == G_PATH && !path)
			path = tlv_as_str(val, vlen);
	}
	if (r < 0 || port < 1 || port > 65535 || timeout < 1 || timeout > PROBE_MAX_MS) {
		send_error(id, EINVAL, "malformed PROBE (PORT 1-65535, TIMEOUT_MS 1-%d)", PROBE_MAX_MS);
		goto out;
	}
	if (path && !valid_path(path)) {
		send_error(id, EINVAL, "bad HTTP path: it must start with / and hold no spaces or "
				       "control characters (at most %d bytes)", PATH_LEN_MAX);
		goto out;
	}
	int64_t deadline = now_ms() + timeout;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s < 0) {
		send_error(id, errno, "cannot open a socket: %s", strerror(errno));
		goto out;
	}
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int e = 0;
	if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
		e = errno == EINPROGRESS ? wait_for(s, POLLOUT, deadline) : errno;
		socklen_t el = sizeof e;
		if (!e && getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el) != 0)
			e = errno;
	}
	if (e) {
		send_error(id, e, "nothing answers on port %lld: %s", (long long)port, strerror(e));
	} else if (path) {
		int status = http_status(s, (int)port, path, deadline);
		if (status < 0)
			send_error(id, -status, "no HTTP answer from port %lld%s: %s", (long long)port,
				   path, strerror(-status));
		else {
			size_t f = frame_begin(&g_out, T_OK, id);
			tlv_int(&g_out, G_STATUS, status);
			frame_end(&g_out, f);
		}
	} else {
		send_ok_empty(id);
	}
	close(s);
out:
	free(path);
}
