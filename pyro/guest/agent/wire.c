/* Byte buffers, frame building and TLV decoding (docs/agent-protocol.md). */
#include "agent.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint32_t get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void put_u32(uint8_t *p, uint32_t v)
{
	p[0] = v & 0xff;
	p[1] = (v >> 8) & 0xff;
	p[2] = (v >> 16) & 0xff;
	p[3] = (v >> 24) & 0xff;
}

static void buf_reserve(struct buf *b, size_t extra)
{
	if (b->off > 0 && b->off >= b->len / 2) {
		/* Compact before growing so a busy stream does not creep upwards. */
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	if (b->len + extra <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 65536;
	while (cap < b->len + extra)
		cap *= 2;
	uint8_t *p = realloc(b->p, cap);
	if (!p) {
		/* Out of memory in the guest: nothing sensible is left to do. */
		static const char msg[] = "pyro-agent: out of memory\n";
		if (write(2, msg, sizeof msg - 1) < 0) {
		}
		_exit(111);
	}
	b->p = p;
	b->cap = cap;
}

void buf_put(struct buf *b, const void *data, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->p + b->len, data, n);
	b->len += n;
}

void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	if (b->off == b->len)
		b->off = b->len = 0;
}

void buf_clear(struct buf *b)
{
	b->off = b->len = 0;
	if (b->cap > (8u << 20)) {
		free(b->p);
		b->p = NULL;
		b->cap = 0;
	}
}

size_t buf_pending(const struct buf *b)
{
	return b->len - b->off;
}

size_t frame_begin(struct buf *b, int type, uint32_t id)
{
	uint8_t hdr[HDR_LEN] = {'P', 'Y', PROTO_VERSION, (uint8_t)type};
	put_u32(hdr + 4, id);
	buf_reserve(b, HDR_LEN);
	size_t start = b->len;
	buf_put(b, hdr, HDR_LEN);
	return start - b->off; /* relative to off: buf_reserve may compact later */
}

void frame_end(struct buf *b, size_t start)
{
	uint8_t *hdr = b->p + b->off + start;
	put_u32(hdr + 8, (uint32_t)(b->len - b->off - start - HDR_LEN));
}

void tlv_bytes(struct buf *b, int tag, const void *v, size_t n)
{
	uint8_t h[6] = {(uint8_t)(tag & 0xff), (uint8_t)(tag >> 8)};
	put_u32(h + 2, (uint32_t)n);
	buf_put(b, h, sizeof h);
	if (n)
		buf_put(b, v, n);
}

void tlv_str(struct buf *b, int tag, const char *s)
{
	tlv_bytes(b, tag, s, strlen(s));
}

void tlv_int(struct buf *b, int tag, int64_t v)
{
	uint8_t raw[8];
	uint64_t u = (uint64_t)v;
	for (int i = 0; i < 8; i++)
		raw[i] = (u >> (8 * i)) & 0xff;
	tlv_bytes(b, tag, raw, 8);
}

int tlv_next(struct tlv_it *it, int *tag, const uint8_t **val, uint32_t *len)
{
	if (it->p == it->end)
		return 0;
	if (it->end - it->p < 6)
		return -1;
	*tag = it->p[0] | it->p[1] << 8;
	*len = get_u32(it->p + 2);
	if ((size_t)(it->end - it->p - 6) < *len)
		return -1;
	*val = it->p + 6;
	it->p += 6 + *len;
	return 1;
}

int64_t tlv_as_int(const uint8_t *val, uint32_t len)
{
	uint64_t u = 0;
	for (uint32_t i = 0; i < len && i < 8; i++)
		u |= (uint64_t)val[i] << (8 * i);
	return (int64_t)u;
}

char *tlv_as_str(const uint8_t *val, uint32_t len)
{
	if (memchr(val, 0, len))
		return NULL;
	char *s = malloc(len + 1);
	if (!s)
		_exit(111);
	memcpy(s, val, len);
	s[len] = 0;
	return s;
}
