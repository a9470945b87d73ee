/*
 * podvm-init: the tiny init of podvm's test and benchmark images.
 *
 * Freestanding x86_64 Linux code: no libc, raw system calls, plain integer
 * instructions only (built with -mgeneral-regs-only, so it runs under KVM's
 * instruction emulator, which has no SSE; see ../README.md).
 *
 * As PID 1 it
 *   1. writes the boot-timer magic (123) to port 0x3f0: podvm logs the time
 *      from its start to this write ("user space reached");
 *   2. mounts proc, sysfs and devtmpfs on /proc, /sys and /dev, opens
 *      /dev/console when the kernel gave it no standard output, and loads
 *      the kernel modules /etc/podvm-modules lists (one path a line, in
 *      dependency order; stock-kernel.sh writes it into its initramfs);
 *   3. prints "podvm-init: ready";
 *   4. runs the checks /proc/cmdline asks for:
 *        podvm.check_disk=DEV   read DEV to its end, print its length and
 *                               FNV-1a 64 checksum;
 *        podvm.ip=A.B.C.D/LEN   give IFACE that address and bring it (and lo)
 *                               up; podvm.iface=NAME (default eth0);
 *        podvm.exec=PATH        after the checks, exec PATH (e.g. /bin/sh)
 *                               instead of rebooting;
 *   5. prints "podvm-init: done" (or "podvm-init: failed N" when any check
 *      failed, each failure having printed a "podvm-init: FAIL ..." line),
 *      syncs and reboots; with reboot=k on the kernel command line Linux
 *      resets through the i8042 and podvm exits 0.
 *
 * Not PID 1, it is a host tool for tests of the same code:
 *   podvm-init --checksum FILE         the line the disk check prints
 *   podvm-init --parse-cmdline STRING  the plan that command line gives
 * and as PID 1 of a test's PID namespace, `podvm-init --cmdline-file FILE`
 * reads its command line from FILE instead of /proc/cmdline.
 */

typedef unsigned long u64;
typedef long i64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

/* System call numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
#define SYS_read 0
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_ioctl 16
#define SYS_nanosleep 35
#define SYS_dup2 33
#define SYS_getpid 39
#define SYS_socket 41
#define SYS_execve 59
#define SYS_exit 60
#define SYS_fcntl 72
#define SYS_mkdir 83
#define SYS_sync 162
#define SYS_mount 165
#define SYS_reboot 169
#define SYS_ioperm 173
#define SYS_finit_module 313

#define O_RDONLY 0
#define O_RDWR 2
#define F_GETFD 1
#define EINTR 4
#define EEXIST 17
#define EBUSY 16
#define ENOENT 2
#define AF_INET 2
#define SOCK_DGRAM 2

/* include/uapi/linux/sockios.h and if.h */
#define SIOCGIFFLAGS 0x8913
#define SIOCSIFFLAGS 0x8914
#define SIOCSIFADDR 0x8916
#define SIOCSIFNETMASK 0x891c
#define IFF_UP 0x1
#define IFNAMSIZ 16

/* include/uapi/linux/reboot.h */
#define REBOOT_MAGIC1 0xfee1dead
#define REBOOT_MAGIC2 672274793
#define REBOOT_CMD_RESTART 0x01234567

/* podvm's boot timer (devices/src/legacy/boot_timer.rs). */
#define BOOT_TIMER_PORT 0x3f0
#define BOOT_TIMER_MAGIC 123

/* FNV-1a, 64-bit (http://www.isthe.com/chongo/tech/comp/fnv/). */
#define FNV64_OFFSET 0xcbf29ce484222325UL
#define FNV64_PRIME 0x100000001b3UL

static i64 syscall6(i64 n, i64 a, i64 b, i64 c, i64 d, i64 e, i64 f)
{
	register i64 r10 __asm__("r10") = d;
	register i64 r8 __asm__("r8") = e;
	register i64 r9 __asm__("r9") = f;
	i64 ret;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

#define SYSCALL3(n, a, b, c) syscall6((n), (i64)(a), (i64)(b), (i64)(c), 0, 0, 0)
#define SYSCALL5(n, a, b, c, d, e) \
	syscall6((n), (i64)(a), (i64)(b), (i64)(c), (i64)(d), (i64)(e), 0)

/* The compiler may emit calls to these for struct copies and zeroing. */
void *memset(void *dst, int c, u64 n)
{
	u8 *d = dst;
	while (n--)
		*d++ = (u8)c;
	return dst;
}

void *memcpy(void *dst, const void *src, u64 n)
{
	u8 *d = dst;
	const u8 *s = src;
	while (n--)
		*d++ = *s++;
	return dst;
}

static u64 str_len(const char *s)
{
	u64 n = 0;
	while (s[n])
		n++;
	return n;
}

/* Does s start with prefix? */
static int starts_with(const char *s, const char *prefix)
{
	while (*prefix)
		if (*s++ != *prefix++)
			return 0;
	return 1;
}

/* ---- output: one line at a time, written whole ---- */

static char line[512];
static u64 line_len;

static void put_str(const char *s)
{
	while (*s && line_len < sizeof(line) - 1)
		line[line_len++] = *s++;
}

static void put_dec(u64 v)
{
	char buf[20];
	int n = 0;
	do {
		buf[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n--) {
		char c[2] = { buf[n], 0 };
		put_str(c);
	}
}

static void put_hex64(u64 v)
{
	static const char digits[] = "0123456789abcdef";
	for (int shift = 60; shift >= 0; shift -= 4) {
		char c[2] = { digits[(v >> shift) & 0xf], 0 };
		put_str(c);
	}
}

/* An IPv4 address in network byte order, dotted. */
static void put_ip(u32 be)
{
	for (int i = 0; i < 4; i++) {
		if (i)
			put_str(".");
		put_dec((be >> (8 * i)) & 0xff);
	}
}

static void end_line(void)
{
	line[line_len++] = '\n';
	const char *p = line;
	u64 left = line_len;
	while (left) {
		i64 n = SYSCALL3(SYS_write, 1, p, left);
		if (n == -EINTR)
			continue;
		if (n <= 0)
			break;
		p += n;
		left -= (u64)n;
	}
	line_len = 0;
}

static void say(const char *a, const char *b)
{
	put_str("podvm-init: ");
	put_str(a);
	put_str(b);
	end_line();
}

static int failures;

/* Set when not PID 1: then nothing waits for device nodes. */
static int host_mode = 1;

/* A failed step: "podvm-init: FAIL <what> <arg>: errno N". */
static void fail(const char *what, const char *arg, i64 err)
{
	failures++;
	put_str("podvm-init: FAIL ");
	put_str(what);
	if (arg) {
		put_str(" ");
		put_str(arg);
	}
	if (err) {
		put_str(": errno ");
		put_dec((u64)-err);
	}
	end_line();
}

/* ---- the command line ---- */

struct plan {
	char disk[128]; /* podvm.check_disk=, empty when absent */
	char iface[IFNAMSIZ]; /* podvm.iface=, default eth0 */
	char exec[128]; /* podvm.exec=, empty when absent */
	int has_ip; /* podvm.ip= given and valid */
	u32 ip; /* network byte order */
	u32 netmask; /* network byte order */
	u32 prefix;
	int bad; /* malformed podvm.* parameters */
};

/* Copies the value that starts at s and ends at a space or NUL into dst
 * (at most cap - 1 bytes); returns 0 when it does not fit or is empty. */
static int copy_value(char *dst, u64 cap, const char *s)
{
	u64 n = 0;
	while (s[n] && s[n] != ' ' && s[n] != '\n' && s[n] != '\t') {
		if (n + 1 >= cap)
			return 0;
		dst[n] = s[n];
		n++;
	}
	dst[n] = 0;
	return n > 0;
}

/* Parses "A.B.C.D/LEN" (each part decimal, A..D <= 255, LEN <= 32). */
static int parse_ip(const char *s, u32 *ip, u32 *prefix)
{
	u32 addr = 0;
	for (int part = 0; part < 4; part++) {
		u32 v = 0;
		int digits = 0;
		while (*s >= '0' && *s <= '9' && digits < 4) {
			v = v * 10 + (u32)(*s++ - '0');
			digits++;
		}
		if (!digits || v > 255)
			return 0;
		addr |= v << (8 * part);
		if (part < 3 && *s++ != '.')
			return 0;
	}
	if (*s++ != '/')
		return 0;
	u32 len = 0;
	int digits = 0;
	while (*s >= '0' && *s <= '9' && digits < 3) {
		len = len * 10 + (u32)(*s++ - '0');
		digits++;
	}
	if (!digits || len > 32 || (*s && *s != ' ' && *s != '\n' && *s != '\t'))
		return 0;
	*ip = addr;
	*prefix = len;
	return 1;
}

static u32 prefix_to_netmask(u32 len)
{
	u32 host = len ? 0xffffffffU << (32 - len) : 0;
	/* to network byte order */
	return ((host >> 24) & 0xff) | ((host >> 8) & 0xff00) |
	       ((host << 8) & 0xff0000) | ((host << 24) & 0xff000000U);
}

static void parse_cmdline(const char *s, struct plan *p)
{
	memset(p, 0, sizeof(*p));
	memcpy(p->iface, "eth0", 5);
	while (*s) {
		while (*s == ' ' || *s == '\n' || *s == '\t')
			s++;
		if (!*s)
			break;
		const char *tok = s;
		while (*s && *s != ' ' && *s != '\n' && *s != '\t')
			s++;
		if (starts_with(tok, "podvm.check_disk=")) {
			if (!copy_value(p->disk, sizeof(p->disk), tok + 17)) {
				p->disk[0] = 0;
				fail("bad podvm.check_disk=", 0, 0);
				p->bad++;
			}
		} else if (starts_with(tok, "podvm.iface=")) {
			if (!copy_value(p->iface, sizeof(p->iface), tok + 12)) {
				memcpy(p->iface, "eth0", 5);
				fail("bad podvm.iface=", 0, 0);
				p->bad++;
			}
		} else if (starts_with(tok, "podvm.exec=")) {
			if (!copy_value(p->exec, sizeof(p->exec), tok + 11)) {
				p->exec[0] = 0;
				fail("bad podvm.exec=", 0, 0);
				p->bad++;
			}
		} else if (starts_with(tok, "podvm.ip=")) {
			p->has_ip = parse_ip(tok + 9, &p->ip, &p->prefix);
			if (p->has_ip) {
				p->netmask = prefix_to_netmask(p->prefix);
			} else {
				fail("bad podvm.ip= (want A.B.C.D/LEN)", 0, 0);
				p->bad++;
			}
		}
	}
}

static void print_plan(const struct plan *p)
{
	if (p->disk[0])
		say("plan check_disk=", p->disk);
	if (p->has_ip) {
		put_str("podvm-init: plan ip=");
		put_ip(p->ip);
		put_str(" netmask=");
		put_ip(p->netmask);
		put_str(" iface=");
		put_str(p->iface);
		end_line();
	}
	if (p->exec[0])
		say("plan exec=", p->exec);
	put_str("podvm-init: plan errors=");
	put_dec((u64)p->bad);
	end_line();
}

/* ---- the checks ---- */

static u8 buf[65536];

/* Reads path to its end: "podvm-init: disk PATH bytes=N fnv1a64=H". */
static int check_disk(const char *path)
{
	i64 fd = -ENOENT;
	/* The device node may appear a little after init starts. */
	for (int tries = 0; tries < 50; tries++) {
		fd = SYSCALL3(SYS_open, path, O_RDONLY, 0);
		if (fd != -ENOENT || host_mode)
			break;
		struct {
			i64 sec, nsec;
		} ts = { 0, 100000000 };
		SYSCALL3(SYS_nanosleep, &ts, 0, 0);
	}
	if (fd < 0) {
		fail("open", path, fd);
		return -1;
	}
	u64 hash = FNV64_OFFSET;
	u64 total = 0;
	for (;;) {
		i64 n = SYSCALL3(SYS_read, fd, buf, sizeof(buf));
		if (n == -EINTR)
			continue;
		if (n < 0) {
			fail("read", path, n);
			SYSCALL3(SYS_close, fd, 0, 0);
			return -1;
		}
		if (n == 0)
			break;
		for (i64 i = 0; i < n; i++) {
			hash ^= buf[i];
			hash *= FNV64_PRIME;
		}
		total += (u64)n;
	}
	SYSCALL3(SYS_close, fd, 0, 0);
	put_str("podvm-init: disk ");
	put_str(path);
	put_str(" bytes=");
	put_dec(total);
	put_str(" fnv1a64=");
	put_hex64(hash);
	end_line();
	return 0;
}

struct sockaddr_in {
	u16 family;
	u16 port;
	u32 addr;
	u8 zero[8];
};

struct ifreq {
	char name[IFNAMSIZ];
	union {
		struct sockaddr_in addr;
		short flags;
		u8 pad[24];
	} u;
};

static int iface_up(i64 sock, const char *name)
{
	struct ifreq req;
	memset(&req, 0, sizeof(req));
	memcpy(req.name, name, str_len(name) + 1);
	i64 r = SYSCALL3(SYS_ioctl, sock, SIOCGIFFLAGS, &req);
	if (r >= 0) {
		req.u.flags |= IFF_UP;
		r = SYSCALL3(SYS_ioctl, sock, SIOCSIFFLAGS, &req);
	}
	if (r < 0)
		fail("bring up", name, r);
	return (int)r;
}

static int set_addr(i64 sock, const char *name, unsigned long request, u32 addr)
{
	struct ifreq req;
	memset(&req, 0, sizeof(req));
	memcpy(req.name, name, str_len(name) + 1);
	req.u.addr.family = AF_INET;
	req.u.addr.addr = addr;
	i64 r = SYSCALL3(SYS_ioctl, sock, request, &req);
	if (r < 0)
		fail(request == SIOCSIFADDR ? "set address of" : "set netmask of", name, r);
	return (int)r;
}

/* "podvm-init: net IFACE A.B.C.D/LEN up" */
static void configure_net(const struct plan *p)
{
	i64 sock = SYSCALL3(SYS_socket, AF_INET, SOCK_DGRAM, 0);
	if (sock < 0) {
		fail("socket(AF_INET)", 0, sock);
		return;
	}
	iface_up(sock, "lo");
	if (set_addr(sock, p->iface, SIOCSIFADDR, p->ip) == 0 &&
	    set_addr(sock, p->iface, SIOCSIFNETMASK, p->netmask) == 0 &&
	    iface_up(sock, p->iface) == 0) {
		put_str("podvm-init: net ");
		put_str(p->iface);
		put_str(" ");
		put_ip(p->ip);
		put_str("/");
		put_dec(p->prefix);
		put_str(" up");
		end_line();
	}
	SYSCALL3(SYS_close, sock, 0, 0);
}

/* ---- PID 1 ---- */

static char modules[4096];

/* Loads each module /etc/podvm-modules names: "podvm-init: modules N". */
static void load_modules(void)
{
	i64 fd = SYSCALL3(SYS_open, "/etc/podvm-modules", O_RDONLY, 0);
	if (fd == -ENOENT)
		return;
	if (fd < 0) {
		fail("open", "/etc/podvm-modules", fd);
		return;
	}
	i64 len = SYSCALL3(SYS_read, fd, modules, sizeof(modules) - 1);
	SYSCALL3(SYS_close, fd, 0, 0);
	if (len < 0) {
		fail("read", "/etc/podvm-modules", len);
		return;
	}
	modules[len] = 0;
	u64 loaded = 0;
	char *s = modules;
	while (*s) {
		char *path = s;
		while (*s && *s != '\n')
			s++;
		if (*s)
			*s++ = 0;
		if (!*path || *path == '#')
			continue;
		i64 mfd = SYSCALL3(SYS_open, path, O_RDONLY, 0);
		if (mfd < 0) {
			fail("open", path, mfd);
			continue;
		}
		i64 r = SYSCALL3(SYS_finit_module, mfd, "", 0);
		SYSCALL3(SYS_close, mfd, 0, 0);
		if (r < 0 && r != -EEXIST)
			fail("load module", path, r);
		else
			loaded++;
	}
	put_str("podvm-init: modules ");
	put_dec(loaded);
	end_line();
}

static void mount_fs(const char *type, const char *dir)
{
	/* A failed mkdir (EEXIST; EROFS on a read-only root) matters only
	 * if the mount then fails. */
	i64 made = SYSCALL3(SYS_mkdir, dir, 0755, 0);
	i64 r = SYSCALL5(SYS_mount, type, dir, type, 0, 0);
	/* EBUSY: already mounted (CONFIG_DEVTMPFS_MOUNT mounts /dev). */
	if (r < 0 && r != -EBUSY) {
		if (made < 0 && made != -EEXIST)
			fail("mkdir", dir, made);
		fail("mount", dir, r);
	}
}

static char cmdline[4096];

static void read_cmdline(const char *path)
{
	i64 fd = SYSCALL3(SYS_open, path, O_RDONLY, 0);
	if (fd < 0) {
		fail("open", path, fd);
		return;
	}
	u64 len = 0;
	while (len < sizeof(cmdline) - 1) {
		i64 n = SYSCALL3(SYS_read, fd, cmdline + len, sizeof(cmdline) - 1 - len);
		if (n == -EINTR)
			continue;
		if (n <= 0)
			break;
		len += (u64)n;
	}
	cmdline[len] = 0;
	SYSCALL3(SYS_close, fd, 0, 0);
}

static void reboot_now(void)
{
	SYSCALL3(SYS_sync, 0, 0, 0);
	i64 r = SYSCALL5(SYS_reboot, REBOOT_MAGIC1, REBOOT_MAGIC2, REBOOT_CMD_RESTART, 0, 0);
	fail("reboot", 0, r);
	/* PID 1 exiting makes the kernel panic; panic=1 then reboots. */
	SYSCALL3(SYS_exit, 1, 0, 0);
}

static void run_as_pid1(const char *cmdline_path, char **envp)
{
	/* 1. The boot-timer signal, before anything else. */
	i64 io = SYSCALL3(SYS_ioperm, BOOT_TIMER_PORT, 1, 1);
	int no_boot_timer = io != 0;
	if (!no_boot_timer)
		__asm__ volatile("outb %b0, %w1" : : "a"(BOOT_TIMER_MAGIC), "Nd"(BOOT_TIMER_PORT));

	/* 2. File systems; a console if the kernel could not open one. */
	mount_fs("proc", "/proc");
	mount_fs("sysfs", "/sys");
	mount_fs("devtmpfs", "/dev");
	if (SYSCALL3(SYS_fcntl, 1, F_GETFD, 0) < 0) {
		i64 fd = SYSCALL3(SYS_open, "/dev/console", O_RDWR, 0);
		if (fd >= 0) {
			for (int i = 0; i < 3; i++)
				if (fd != i)
					SYSCALL3(SYS_dup2, fd, i, 0);
			if (fd > 2)
				SYSCALL3(SYS_close, fd, 0, 0);
		}
	}

	load_modules();

	/* Not a failure (a user namespace has no I/O ports), but a kernel
	 * without CONFIG_X86_IOPL_IOPERM would never report its boot time. */
	if (no_boot_timer) {
		put_str("podvm-init: no boot timer (ioperm: errno ");
		put_dec((u64)-io);
		put_str(")");
		end_line();
	}

	/* 3. */
	say("ready", "");

	/* 4. */
	struct plan plan;
	read_cmdline(cmdline_path);
	parse_cmdline(cmdline, &plan);
	if (plan.disk[0])
		check_disk(plan.disk);
	if (plan.has_ip)
		configure_net(&plan);

	/* 5. */
	if (failures) {
		put_str("podvm-init: failed ");
		put_dec((u64)failures);
		end_line();
	} else {
		say("done", "");
	}
	if (plan.exec[0]) {
		say("exec ", plan.exec);
		char *argv[2] = { plan.exec, 0 };
		i64 r = SYSCALL3(SYS_execve, plan.exec, argv, envp);
		fail("exec", plan.exec, r);
	}
	reboot_now();
}

static void usage(void)
{
	put_str("usage: podvm-init --checksum FILE | --parse-cmdline STRING (as PID 1: the init)");
	end_line();
}

int main(int argc, char **argv, char **envp)
{
	if (SYSCALL3(SYS_getpid, 0, 0, 0) == 1) {
		host_mode = 0;
		/* Tests run the PID 1 path in a PID namespace with a command
		 * line of their own (the kernel gives init's arguments only
		 * from after " -- " or from unknown undotted parameters). */
		if (argc == 3 && starts_with(argv[1], "--cmdline-file") && !argv[1][14])
			run_as_pid1(argv[2], envp);
		else
			run_as_pid1("/proc/cmdline", envp);
		return 1;
	}
	if (argc == 3 && starts_with(argv[1], "--checksum") && !argv[1][10]) {
		return check_disk(argv[2]) ? 1 : 0;
	}
	if (argc == 3 && starts_with(argv[1], "--parse-cmdline") && !argv[1][15]) {
		struct plan plan;
		parse_cmdline(argv[2], &plan);
		print_plan(&plan);
		return plan.bad ? 1 : 0;
	}
	usage();
	return 2;
}

/* The entry point: the stack holds argc, argv[], NULL, envp[], NULL. */
__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	xor %ebp, %ebp\n"
	"	mov (%rsp), %rdi\n"
	"	lea 8(%rsp), %rsi\n"
	"	lea 16(%rsp,%rdi,8), %rdx\n"
	"	and $-16, %rsp\n"
	"	call main\n"
	"	mov %eax, %edi\n"
	"	mov $60, %eax\n"
	"	syscall\n"
	"	hlt\n");
