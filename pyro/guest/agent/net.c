/* Guest network set-up from the kernel command line (owned by pyro/net; see docs/networking.md).
 *
 *   pyro.net=ADDR/PREFIX,GATEWAY[,DNS]   configure eth0, a default route and /etc/resolv.conf
 *   pyro.hosts=NAME=ADDR[,NAME=ADDR...]  entries for /etc/hosts (the allowlist's names)
 *
 * Without pyro.net the guest has no network device and nothing is done (lo is up already).
 * Only ioctls and plain files: the guest image needs no `ip`, `ifconfig` or DHCP client.
 */
#include "agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NET_IFACE "eth0"
#define HOSTS_MARK "# pyro-net"

static void set_sin(struct sockaddr *sa, struct in_addr addr)
{
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_addr = addr;
	memcpy(sa, &sin, sizeof sin);
}

static int iface_ioctl(int s, unsigned long req, struct ifreq *ifr, const char *what)
{
	snprintf(ifr->ifr_name, IFNAMSIZ, "%s", NET_IFACE);
	if (ioctl(s, req, ifr) == 0)
		return 0;
	logmsg("network: cannot %s on %s: %s", what, NET_IFACE, strerror(errno));
	return -1;
}

static int configure_iface(struct in_addr addr, int prefix, struct in_addr gateway)
{
	/* The virtio-net device probes before /init runs; the wait covers slow emulation. */
	struct stat st;
	for (int waited = 0; waited < 2000 && stat("/sys/class/net/" NET_IFACE, &st) != 0;
	     waited += 10) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	struct ifreq ifr;
	struct in_addr mask = {htonl(prefix == 0 ? 0 : 0xffffffffu << (32 - prefix))};
	int rc = 0;
	memset(&ifr, 0, sizeof ifr);
	set_sin(&ifr.ifr_addr, addr);
	rc |= iface_ioctl(s, SIOCSIFADDR, &ifr, "set the address");
	memset(&ifr, 0, sizeof ifr);
	set_sin(&ifr.ifr_netmask, mask);
	rc |= iface_ioctl(s, SIOCSIFNETMASK, &ifr, "set the netmask");
	memset(&ifr, 0, sizeof ifr);
	if (iface_ioctl(s, SIOCGIFFLAGS, &ifr, "read the flags") == 0) {
		ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
		rc |= iface_ioctl(s, SIOCSIFFLAGS, &ifr, "bring the link up");
	} else {
		rc = -1;
	}
	struct rtentry rt;
	memset(&rt, 0, sizeof rt);
	set_sin(&rt.rt_dst, (struct in_addr){0});
	set_sin(&rt.rt_genmask, (struct in_addr){0});
	set_sin(&rt.rt_gateway, gateway);
	rt.rt_flags = RTF_UP | RTF_GATEWAY;
	rt.rt_dev = NET_IFACE;
	if (ioctl(s, SIOCADDRT, &rt) != 0 && errno != EEXIST) {
		logmsg("network: cannot add the default route: %s", strerror(errno));
		rc = -1;
	}
	close(s);
	return rc;
}

static void write_file(const char *path, const char *text)
{
	char tmp[64];
	snprintf(tmp, sizeof tmp, "%s.pyro-tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		logmsg("network: cannot write %s: %s", path, strerror(errno));
		return;
	}
	size_t len = strlen(text);
	int ok = write(fd, text, len) == (ssize_t)len;
	close(fd);
	/* rename() also replaces a symlink (e.g. to a resolver daemon's file) with a file. */
	if (!ok || rename(tmp, path) != 0) {
		logmsg("network: cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
	}
}

/* /etc/hosts without earlier pyro entries (a persistent VM boots again), plus `spec`. */
static void write_hosts(const char *spec)
{
	char old[16384] = {0}, out[24576];
	size_t used = 0;
	int fd = open("/etc/hosts", O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		ssize_t n = read(fd, old, sizeof old - 1);
		close(fd);
		old[n > 0 ? n : 0] = 0;
		if (n == (ssize_t)sizeof old - 1) {
			/* Rewriting would cut the file short: leave a huge /etc/hosts alone. */
			logmsg("network: /etc/hosts is larger than %zu bytes; not changed",
			       sizeof old - 1);
			return;
		}
	}
	if ((!spec || !*spec) && strstr(old, HOSTS_MARK) == NULL)
		return; /* nothing to add, nothing of ours to remove */
	out[0] = 0;
	char *save = NULL;
	for (char *line = strtok_r(old, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strstr(line, HOSTS_MARK) == NULL)
			used += snprintf(out + used, sizeof out - used, "%s\n", line);
		if (used >= sizeof out)
			return;
	}
	char *list = strdup(spec ? spec : "");
	save = NULL;
	for (char *ent = strtok_r(list, ",", &save); ent; ent = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(ent, '=');
		if (!eq)
			continue;
		*eq = 0;
		used += snprintf(out + used, sizeof out - used, "%s\t%s\t%s\n", eq + 1, ent,
				 HOSTS_MARK);
		if (used >= sizeof out) {
			free(list);
			return;
		}
	}
	free(list);
	write_file("/etc/hosts", out);
}

void net_setup(void)
{
	char *conf = cmdline_value("pyro.net");
	if (!conf)
		return;
	char *fields[3] = {conf, NULL, NULL};
	for (int i = 1; i < 3 && fields[i - 1]; i++) {
		char *comma = strchr(fields[i - 1], ',');
		if (comma) {
			*comma = 0;
			fields[i] = comma + 1;
		}
	}
	char *slash = strchr(conf, '/');
	int prefix = slash ? atoi(slash + 1) : 24;
	if (slash)
		*slash = 0;
	struct in_addr addr, gateway;
	if (inet_pton(AF_INET, conf, &addr) != 1 || !fields[1] ||
	    inet_pton(AF_INET, fields[1], &gateway) != 1 || prefix < 0 || prefix > 32) {
		logmsg("network: malformed pyro.net= on the kernel command line; no network");
		free(conf);
		return;
	}
	configure_iface(addr, prefix, gateway);
	char resolv[128];
	if (fields[2] && *fields[2])
		snprintf(resolv, sizeof resolv, "nameserver %s\n", fields[2]);
	else
		snprintf(resolv, sizeof resolv, "# pyro: no DNS server (allowlist names are in /etc/hosts)\n");
	write_file("/etc/resolv.conf", resolv);
	char *hosts = cmdline_value("pyro.hosts");
	write_hosts(hosts);
	free(hosts);
	free(conf);
}
