/* What runs: scenario=multi|panic|live picks the processes; CPU 0 prints the setup manifest
 * once they have had time to reach their states. */
#include "mck.h"

static unsigned long manifest_tick;
static int manifest_done = 1;

#define SPAWN(...) ({ static const char *const a[] = { __VA_ARGS__ }; \
	create_process("app", a, (int)(sizeof(a) / sizeof(a[0]))); })

/* Processes on a real node descend from one another (a job script starting its ranks);
 * giving some of ours a parent makes PPID a fact the tools must really read. */
static void set_parent(struct process *child, struct process *parent)
{
	child->ppid_parent = parent;
}

static const char *ncpu_str(int extra)
{
	static char buf[4][4];
	static int k;
	char *b = buf[k++ & 3];
	int n = num_processors + extra;
	if (n >= 10) { b[0] = '0' + n / 10; b[1] = '0' + n % 10; b[2] = 0; }
	else { b[0] = '0' + n; b[1] = 0; }
	return b;
}

void scenario_start(void)
{
	/* Enough boot chatter to wrap the 16 KiB kmsg ring, as a long-running node would. */
	for (int i = 0; i < 320; i++)
		kmsg_printf("boot: init step %03d of 320, memory and cpu bookkeeping ok\n", i);

	if (!strncmp(scenario_name, "multi", 6)) {
		const char *a0[] = { "/usr/bin/spinner", "spin", ncpu_str(1) };
		struct process *spinner = create_process("app", a0, 3);
		struct process *mapper = SPAWN("/opt/app/mapper", "mapper", "--ranges=24");
		set_parent(mapper, spinner);
		set_parent(SPAWN("/usr/bin/zombie", "zombie"), mapper);
		set_parent(SPAWN("/usr/bin/exiter", "exiter"), spinner);
		SPAWN("/usr/bin/worker", "spin", "2");
	} else if (!strncmp(scenario_name, "panic", 6)) {
		struct process *spinner = SPAWN("/usr/bin/spinner", "spin", "2");
		set_parent(SPAWN("/opt/app/mapper", "mapper", "--ranges=24"), spinner);
		SPAWN("/usr/bin/zombie", "zombie");
		set_parent(SPAWN("/usr/bin/panicker", "panic"), spinner);
	} else if (!strncmp(scenario_name, "live", 5)) {
		const char *a0[] = { "/usr/bin/spinner", "spin", ncpu_str(0) };
		struct process *spinner = create_process("app", a0, 3);
		set_parent(SPAWN("/usr/bin/worker", "spin", "2"), spinner);
		SPAWN("/usr/bin/sleeper", "sleeper");
	} else {
		fatal("unknown scenario %s", scenario_name);
	}
	manifest_tick = ticks + 30;
	manifest_done = 0;
}

/* CPU 0 timer: stop the other CPUs in their timer handler, print, release them. */
void scenario_tick(void)
{
	if (manifest_done || ticks < manifest_tick) return;
	manifest_done = 1;
	__atomic_store_n(&world_pause_req, 1, __ATOMIC_RELEASE);
	for (long spin = 0; __atomic_load_n(&world_pause_ack, __ATOMIC_ACQUIRE) < num_processors - 1; spin++) {
		if (spin > 300000000L) break;
		cpu_pause();
	}
	print_manifest("setup");
	boot_param->status = 3;
	serial_printf("MCKTOOLS-READY\n");
	__atomic_store_n(&world_pause_req, 0, __ATOMIC_RELEASE);
}
