/*
 * floor.c: the QoS 0 floor of a transparent MQTT-SN gateway, in C, for
 * firmware-sim/bench.sh (mode "floorc"). One thread, a blocking recvfrom(2)
 * per datagram and one send(2) of an MQTT 5 PUBLISH on the client's own TCP
 * connection to the broker: the system calls any such gateway must make for
 * a QoS 0 message, and nothing else. Understands what the burst scenario
 * sends (CONNECT, REGISTER, QoS 0 PUBLISH, PINGREQ, DISCONNECT) over IPv4.
 * Not a gateway: no sessions, no checks, no keep-alive.
 *
 *   cc -O2 -o floorc testdata/floor/floor.c && ./floorc 11884 11883
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXTOPICS 16

struct client {
	int fd;
	int ntopics;
	int topiclen[MAXTOPICS + 1];
	char topic[MAXTOPICS + 1][128];
};

static struct client *clients[65536]; /* by source port */

static int dial(int port, const unsigned char *id, int idlen) {
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	if (connect(fd, (void *)&a, sizeof a) != 0) {
		perror("floorc: connect to the broker");
		exit(1);
	}
	/* CONNECT: MQTT level 5, clean start, keep-alive 0, no properties. */
	unsigned char pk[256] = {0x10, 13 + idlen, 0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 0, 0, 0, idlen};
	memcpy(pk + 15, id, idlen);
	unsigned char ack[64];
	if (send(fd, pk, 15 + idlen, 0) != 15 + idlen || recv(fd, ack, sizeof ack, 0) < 4 || ack[0] != 0x20 || ack[3] != 0) {
		fprintf(stderr, "floorc: CONNECT refused\n");
		exit(1);
	}
	return fd;
}

int main(int argc, char **argv) {
	int port = argc > 1 ? atoi(argv[1]) : 11884, broker = argc > 2 ? atoi(argv[2]) : 11883;
	int u = socket(AF_INET, SOCK_DGRAM, 0), rb = 4 << 20;
	setsockopt(u, SOL_SOCKET, SO_RCVBUF, &rb, sizeof rb);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (bind(u, (void *)&a, sizeof a) != 0) {
		perror("floorc: bind");
		return 1;
	}
	unsigned char in[2048], out[2048];
	for (;;) {
		struct sockaddr_in from;
		socklen_t fromlen = sizeof from;
		ssize_t n = recvfrom(u, in, sizeof in, 0, (void *)&from, &fromlen);
		if (n < 2 || in[0] != n)
			continue;
		struct client *c = clients[ntohs(from.sin_port)];
		switch (in[1]) {
		case 0x04: /* CONNECT */
			if (n < 7 || n - 6 > 200)
				break;
			c = clients[ntohs(from.sin_port)] = calloc(1, sizeof *c);
			c->fd = dial(broker, in + 6, n - 6);
			sendto(u, (unsigned char[]){3, 0x05, 0}, 3, 0, (void *)&from, fromlen);
			break;
		case 0x0A: { /* REGISTER */
			if (!c || n < 7 || n - 6 > 128 || c->ntopics == MAXTOPICS)
				break;
			int t = ++c->ntopics;
			c->topiclen[t] = n - 6;
			memcpy(c->topic[t], in + 6, n - 6);
			sendto(u, (unsigned char[]){7, 0x0B, 0, t, in[4], in[5], 0}, 7, 0, (void *)&from, fromlen);
			break;
		}
		case 0x0C: { /* PUBLISH, QoS 0 */
			int id = in[3] << 8 | in[4];
			if (!c || n < 7 || id < 1 || id > c->ntopics)
				break;
			int tl = c->topiclen[id], dl = n - 7, size = 2 + tl + 1 + dl, i = 0;
			out[i++] = 0x30;
			do {
				out[i] = size & 0x7f;
				size >>= 7;
				if (size)
					out[i] |= 0x80;
				i++;
			} while (size);
			out[i++] = tl >> 8;
			out[i++] = tl;
			memcpy(out + i, c->topic[id], tl);
			i += tl;
			out[i++] = 0; /* no properties */
			memcpy(out + i, in + 7, dl);
			i += dl;
			send(c->fd, out, i, MSG_DONTWAIT | MSG_NOSIGNAL);
			break;
		}
		case 0x16: /* PINGREQ */
			sendto(u, (unsigned char[]){2, 0x17}, 2, 0, (void *)&from, fromlen);
			break;
		case 0x18: /* DISCONNECT */
			sendto(u, (unsigned char[]){2, 0x18}, 2, 0, (void *)&from, fromlen);
			break;
		}
	}
}
