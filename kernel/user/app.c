/* The scenario program. argv[1] picks the behaviour:
 *   spin N     N threads that increment their own counter forever
 *   mapper     many vm ranges (anon, 2 MiB, file-like, heap, stack) and threads that sleep,
 *              spin, and stop themselves
 *   zombie     a thread that exits while the process lives on
 *   exiter     the whole process exits (zombie process)
 *   sleeper    sleeps forever
 *   panic      sleeps a while, then asks the kernel to fault (panic scenario) */
typedef unsigned long ulong;

static long sc(long n, long a, long b, long c, long d, long e, long f)
{
	long r;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9) : "rcx", "r11", "memory");
	return r;
}

long clone_thread(void (*fn)(void *), void *arg, void *stack_top);

static ulong slen(const char *s) { ulong n = 0; while (s[n]) n++; return n; }
static void say(const char *s) { sc(1, 1, (long)s, slen(s), 0, 0, 0); }
static void sleep_ms(ulong ms) { ulong ts[2] = { ms / 1000, (ms % 1000) * 1000000 }; sc(35, (long)ts, 0, 0, 0, 0, 0); }
static void sleep_forever(void) { for (;;) sleep_ms(100000000); }
static long mmap_anon(ulong len, int prot, int extra) { return sc(9, 0, len, prot, 0x22 | extra, -1, 0); }
static int atoi_(const char *s) { int v = 0; while (*s >= '0' && *s <= '9') v = v * 10 + *s++ - '0'; return v; }

#define MAX_T 16
static volatile ulong counters[MAX_T];
static char *stacks[MAX_T];

static void spin(void *arg)
{
	ulong i = (ulong)arg;
	sc(500, (long)&counters[i], 0, 0, 0, 0, 0);
	for (;;) counters[i]++;
}

static void sleeper_thread(void *arg) { (void)arg; sleep_forever(); }

static void stopper_thread(void *arg)
{
	(void)arg;
	sc(234, sc(39, 0, 0, 0, 0, 0, 0), sc(186, 0, 0, 0, 0, 0, 0), 19, 0, 0, 0);  /* tgkill(self, SIGSTOP) */
	sleep_forever();
}

static void exit_thread(void *arg) { (void)arg; sc(60, 5, 0, 0, 0, 0, 0); }

static void start(void (*fn)(void *), ulong arg)
{
	char *stk = (char *)mmap_anon(65536, 3, 0);
	stacks[arg] = stk;
	clone_thread(fn, (void *)arg, stk + 65536);
}

static int streq(const char *a, const char *b) { while (*a && *a == *b) { a++; b++; } return *a == *b; }

static void mapper(void)
{
	/* anonymous ranges with alternating protections (no merging) */
	for (int i = 0; i < 12; i++) {
		char *p = (char *)mmap_anon(4096 * (1 + i % 3), (i & 1) ? 1 : 3, 0);
		if (!(i & 1)) p[0] = (char)i;
	}
	long victim = mmap_anon(8192, 3, 0);
	sc(11, victim, 8192, 0, 0, 0, 0);                                /* munmap */
	char *huge = (char *)mmap_anon(2UL << 20, 3, 0x40000);           /* MAP_HUGETLB: 2 MiB page */
	huge[4096] = 42;
	long lib = sc(9, 0, 3 * 4096, 5, 0x02, 3, 0);                    /* file-like, fd 3 */
	(void)lib;
	long brk0 = sc(12, 0, 0, 0, 0, 0, 0);
	sc(12, brk0 + 20000, 0, 0, 0, 0, 0);
	sc(12, brk0 + 70000, 0, 0, 0, 0, 0);
	((char *)brk0)[100] = 1;
	say("mapper: ranges ready\n");
	start(sleeper_thread, 1);
	start(spin, 2);
	start(stopper_thread, 3);
	sleep_forever();
}

int umain(long *sp)
{
	int argc = (int)sp[0];
	char **argv = (char **)(sp + 1);
	const char *mode = argc > 1 ? argv[1] : "sleeper";
	if (streq(mode, "spin")) {
		int n = argc > 2 ? atoi_(argv[2]) : 1;
		if (n > MAX_T) n = MAX_T;
		for (int i = 1; i < n; i++) start(spin, i);
		spin((void *)0);
	} else if (streq(mode, "mapper")) {
		mapper();
	} else if (streq(mode, "zombie")) {
		start(exit_thread, 1);
		sleep_forever();
	} else if (streq(mode, "exiter")) {
		sleep_ms(50);
		return 7;
	} else if (streq(mode, "panic")) {
		say("panicker: waiting\n");
		sleep_ms(1500);
		sc(501, 1, 0, 0, 0, 0, 0);
	}
	sleep_forever();
	return 0;
}
