# /lib/board.sh in every board's initramfs: the steps each board's /init runs.
# BusyBox ash; sourced, not executed.

# arg NAME: the value of NAME=... on the kernel command line.
arg() {
	for w in $(cat /proc/cmdline); do
		case $w in "$1="*) echo "${w#*=}"; return ;; esac
	done
}

mount_fs() {
	mkdir -p /proc /sys /dev /tmp /run /root /var/lib/porthole
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev 2>/dev/null
	mkdir -p /dev/pts
	mount -t devpts devpts /dev/pts
	chmod 1777 /tmp
	chmod 0700 /root /var/lib/porthole
}

# load_modules: insmod /lib/modules/*.ko in the order build.sh wrote.
load_modules() {
	while read -r m; do
		insmod "/lib/modules/$m.ko" || echo "board: insmod $m failed"
	done </lib/modules/load-order
}

# set_clock: TLS needs a clock; boards without a battery-backed RTC start in 1970,
# so the host passes its time as porthole.time=<unix seconds>.
set_clock() {
	t=$(arg porthole.time)
	if [ -n "$t" ] && [ "$(date +%s)" -lt "$t" ]; then
		date -s "@$t" >/dev/null
	fi
}

# net_up: 10.0.2.15/24 and no default route: QEMU's user network then reaches
# only 10.0.2.2, the host's loopback.
net_up() {
	ip link set lo up
	ip addr add 10.0.2.15/24 dev eth0
	ip link set eth0 up
}

# tune: porthole.overcommit=N sets vm.overcommit_memory (2 = strict accounting,
# to check the agent starts on devices configured that way).
tune() {
	oc=$(arg porthole.overcommit)
	if [ -n "$oc" ]; then
		echo "$oc" >/proc/sys/vm/overcommit_memory
		echo "board: vm.overcommit_memory=$(cat /proc/sys/vm/overcommit_memory)"
		grep -E 'CommitLimit|Committed_AS' /proc/meminfo
	fi
}

# report_memory: the agent's memory on the console every 5 s for the first three
# minutes; the board test takes the line that follows the agent's MQTT
# subscription, before it opens a tunnel (the idle figure of the memory budget).
# Rss and Anonymous come from smaps_rollup, which walks the page tables: exact.
# VmRSS in status is not, on these 6.1 kernels: each thread keeps its own count
# and folds it in only every 64 page faults, so on the SMP ARM kernels a Go
# process's VmRSS lagged ~2 MiB behind (5.4 against 7.5 MiB on armv7).
# The binary is in the initramfs (RAM), so its mapped pages show as RssShmem.
report_memory() {
	i=0
	while [ $i -lt 36 ]; do
		sleep 5
		p=$(pidof porthole)
		[ -n "$p" ] && echo "board: agent memory $(grep -E '^(Rss|Anonymous):' /proc/$p/smaps_rollup | tr -s ' \t\n' ' ')(smaps_rollup); status $(grep -E '^(VmRSS|RssAnon|RssShmem)' /proc/$p/status | tr -s ' \t\n' ' ')"
		i=$((i + 1))
	done
}

# supervise: run the agent like an init system would: exit 1 (configuration
# error) is final, anything else is restarted after 5 s.
supervise() {
	while :; do
		echo "board: starting porthole agent"
		/usr/bin/porthole agent -c /etc/porthole/porthole.toml
		rc=$?
		echo "board: porthole agent exited with status $rc"
		[ $rc -eq 1 ] && return
		sleep 5
	done
}
