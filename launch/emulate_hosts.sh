#!/usr/bin/env bash
# Emulates a cluster of N hosts on this machine, for multi-host runs of
# embtrain over real TCP: N network namespaces ("hosts") joined by veth pairs
# to one bridge (the "switch"), each host's link shaped with tc.
#
#   launch/emulate_hosts.sh N [--rate 10gbit] [--delay 0] [--loss 0]
#                             [--slots 1] [--prefix et] [--dir DIR]
#   launch/emulate_hosts.sh --down [--prefix et] [--dir DIR]
#   launch/emulate_hosts.sh --stats [--prefix et]
#
#   N         hosts, 1 to 250
#   --rate    each host's link, each direction (tc units: 1gbit, 25gbit,
#             800mbit); tbf on the host's end (what it sends) and on the
#             switch's end (what it receives, so incast is limited too)
#   --delay   one-way latency host to host (tc time: 20us, 1ms); 0 = none
#   --loss    percentage of packets a host's sends lose; 0 = none
#             (--delay and --loss need the kernel's netem qdisc, sch_netem;
#             without it they are refused, saying so)
#   --slots   ranks per host in the hostfile (default 1)
#   --prefix  of every name made (default et: namespaces et-h0.., et-sw,
#             links et-p0..); at most 6 characters [a-z0-9]
#   --dir     where the hostfile and launch scripts go (default
#             /tmp/embtrain-hosts-PREFIX)
#   --down    remove everything made with this prefix (namespaces, links,
#             processes left inside them, DIR), and nothing else
#   --stats   bytes each host's link carried: "host rx_bytes tx_bytes" lines
#
# Layout: host i is the namespace PREFIX-hI, with lo and eth0 at
# 198.18.x.y/15 (198.18.0.0/15 is the range RFC 2544 keeps for network
# benchmarks; host i is address 198.18.0.0 + i + 1) and no other route, so
# nothing leaves the emulated cluster. The bridge lives in its own namespace
# PREFIX-sw rather than in the root namespace: the machine's own network
# (its firewall, its bridges, its routes) is never touched, and deleting the
# namespaces removes every link and the bridge with them.
#
# Files in DIR: `hostfile` (one address per host, slots=S); `agent`, the rsh
# agent Open MPI calls as "agent HOST COMMAND..." (runs COMMAND in HOST's
# namespace with ip netns exec, as ssh would on that host, under the host
# name PREFIX-hI: Open MPI's daemons of one host name share session folders
# in /tmp, and 1 launch in 10 of 8 hosts hung before they had their own); `mpirun`, which
# runs Open MPI's mpirun inside host 0 (as on a cluster's first node, whose
# ranks it starts itself; orted starts the others' through the agent) with
# the hostfile, the agent and every transport forced onto TCP over eth0
# (btl tcp,self; btl and oob restricted to 198.18.0.0/15: no shared memory,
# no loopback between ranks of different hosts). Example:
#
#   launch/emulate_hosts.sh 2 --rate 10gbit
#   /tmp/embtrain-hosts-et/mpirun -np 2 build-cpu/embtrain train --config ...
#   launch/emulate_hosts.sh --stats; launch/emulate_hosts.sh --down
#
# Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for ip netns) and iproute2.
# Running it again first removes what the last run with the prefix made; a
# failure part way removes everything (trap).
set -euo pipefail

me="emulate_hosts.sh"
die() { echo "$me: $*" >&2; exit 1; }

n="" rate=10gbit delay=0 loss=0 slots=1 prefix=et dir="" mode=up
need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see the header of $0)"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --rate) need "$@"; rate=$2; shift 2 ;;
    --delay) need "$@"; delay=$2; shift 2 ;;
    --loss) need "$@"; loss=$2; shift 2 ;;
    --slots) need "$@"; slots=$2; shift 2 ;;
    --prefix) need "$@"; prefix=$2; shift 2 ;;
    --dir) need "$@"; dir=$2; shift 2 ;;
    --down) mode=down; shift ;;
    --stats) mode=stats; shift ;;
    -h | --help) sed -n '2,51p' "$0"; exit 0 ;;
    -*) die "unknown option $1 (valid: --rate --delay --loss --slots --prefix --dir --down --stats)" ;;
    *) [[ -z "$n" ]] || die "one host count only (got $n and $1)"; n=$1; shift ;;
  esac
done
[[ "$prefix" =~ ^[a-z0-9]{1,6}$ ]] || die "--prefix '$prefix' must be 1 to 6 characters [a-z0-9]"
dir=${dir:-/tmp/embtrain-hosts-$prefix}
sw="$prefix-sw"

command -v ip >/dev/null || die "needs 'ip' (iproute2), which is not on PATH"
command -v unshare >/dev/null || die "needs 'unshare' (util-linux), which is not on PATH"
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces need CAP_NET_ADMIN and CAP_SYS_ADMIN)"

# Every namespace this prefix made, hosts and switch.
our_namespaces() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$prefix-(sw|h[0-9]+)\$" || true
}

down() {
  local ns pids link
  for ns in $(our_namespaces); do
    # Processes left in a namespace keep it (and its links) alive after
    # `ip netns del`: end them first (orted or ranks of a job that failed).
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [[ -n "$pids" ]]; then
      kill -TERM $pids 2>/dev/null || true
      sleep 0.5
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$ns" 2>/dev/null || true
  done
  # Links of a run that failed before moving them out of the root namespace.
  for link in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 |
    grep -E "^$prefix-(p|h)[0-9]+e?\$" || true); do
    ip link del "$link" 2>/dev/null || true
  done
  # Only the files this script writes, then the folder if that empties it.
  rm -f "$dir/hostfile" "$dir/agent" "$dir/mpirun" "$dir/hosts"
  rmdir "$dir" 2>/dev/null || true
}

addr_of() {  # host index -> its address in 198.18.0.0/15
  local k=$(($1 + 1))
  echo "198.$((18 + k / 65536)).$((k / 256 % 256)).$((k % 256))"
}

if [[ $mode == down ]]; then
  [[ -z "$n" ]] || die "--down takes no host count"
  down
  echo "$me: removed prefix $prefix (namespaces, links, $dir)"
  exit 0
fi

if [[ $mode == stats ]]; then
  found=0
  for ns in $(our_namespaces | grep -v -- "-sw\$" | sort -t h -k 2 -n); do
    found=1
    s=/sys/class/net/eth0/statistics
    echo "$ns $(ip netns exec "$ns" cat $s/rx_bytes) $(ip netns exec "$ns" cat $s/tx_bytes)"
  done
  ((found)) || die "no emulated hosts with prefix $prefix (make them first)"
  exit 0
fi

[[ -n "$n" ]] || die "how many hosts? (launch/emulate_hosts.sh N, see -h)"
[[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 250)) || die "host count '$n' must be 1 to 250"
[[ "$slots" =~ ^[0-9]+$ ]] && ((slots >= 1)) || die "--slots '$slots' must be a positive integer"
[[ "$rate" =~ ^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps)$ ]] ||
  die "--rate '$rate' is not a tc rate (e.g. 1gbit, 25gbit, 800mbit)"
[[ "$delay" =~ ^[0-9]+(\.[0-9]+)?(|s|ms|us)$ ]] || die "--delay '$delay' is not a tc time (e.g. 0, 20us, 1ms)"
[[ "$loss" =~ ^[0-9]+(\.[0-9]+)?%?$ ]] || die "--loss '$loss' is not a percentage (e.g. 0, 0.1)"
loss=${loss%\%}
command -v tc >/dev/null || die "needs 'tc' (iproute2), which is not on PATH"
netem=0
[[ "$delay" =~ ^0+(\.0+)?[a-z]*$ ]] || netem=1
[[ "$loss" =~ ^0+(\.0+)?$ ]] || netem=1

# A rate in bytes per second, from tc's notation (bit units are powers of
# 1000, as tc reads them).
rate_bytes() {
  local v=${1%%[a-z]*} u=${1##*[0-9.]} m
  case $u in
    bit) m=0.125 ;; kbit) m=125 ;; mbit) m=125e3 ;; gbit) m=125e6 ;; tbit) m=125e9 ;;
    bps) m=1 ;; kbps) m=1e3 ;; mbps) m=1e6 ;; gbps) m=1e9 ;;
  esac
  awk -v v="$v" -v m="$m" 'BEGIN { printf "%d\n", v * m }'
}
rate_Bps=$(rate_bytes "$rate")
((rate_Bps >= 125000)) || die "--rate '$rate' is below 1mbit"
# tbf's bucket: 1 ms of the rate (tc's timer granularity), at least 64 KiB
# (a GSO segment of the veth must fit, else tbf would drop it); the queue
# holds 20 ms of the rate, so TCP, not tbf, sets the pace.
burst=$((rate_Bps / 1000))
((burst >= 65536)) || burst=65536

# Attaches tbf (and netem under it where asked) to the egress of one link.
shape() {  # namespace device with_netem
  local ns=$1 dev=$2 parent="root"
  if [[ $3 == 1 ]]; then
    local args=()
    [[ "$delay" =~ ^0+(\.0+)?[a-z]*$ ]] || args+=(delay "$delay")
    [[ "$loss" =~ ^0+(\.0+)?$ ]] || args+=(loss "$loss%")
    ip netns exec "$ns" tc qdisc add dev "$dev" root handle 1: netem "${args[@]}" limit 100000
    parent="parent 1:1"
  fi
  ip netns exec "$ns" tc qdisc add dev "$dev" $parent handle 10: tbf rate "$rate" burst "$burst" latency 20ms
}

# Which qdiscs this kernel has, asked of a scratch link (tc's error for a
# missing one is "Specified qdisc kind is unknown").
probe_qdisc() {  # kind args...
  local probe="$prefix-p999e" err
  ip link add "$probe" type veth peer name "$prefix-p999" 2>/dev/null || die "cannot make a veth pair (ip link add ... type veth): no CAP_NET_ADMIN or no veth in this kernel"
  if ! err=$(tc qdisc add dev "$probe" root "$@" 2>&1); then
    ip link del "$probe" 2>/dev/null || true
    die "this kernel has no '$1' qdisc (sch_$1), needed for $(
      [[ $1 == netem ]] && echo "--delay/--loss (run with --delay 0 --loss 0, or load it: modprobe sch_netem)" ||
        echo "--rate (load it: modprobe sch_$1)"); tc said: $err"
  fi
  ip link del "$probe" 2>/dev/null || true
}

down  # idempotent: what a last run with this prefix left goes first
trap 'status=$?; if ((status != 0)); then echo "$me: failed (exit $status), removing what it made" >&2; down; fi' EXIT
trap 'exit 130' INT TERM

probe_qdisc tbf rate "$rate" burst "$burst" latency 20ms
((netem == 0)) || probe_qdisc netem delay 1ms

ip netns add "$sw" || die "cannot make network namespace $sw (ip netns add): needs CAP_SYS_ADMIN"
ip -n "$sw" link set lo up
ip -n "$sw" link add br0 type bridge || die "cannot make a bridge (ip link add ... type bridge): no bridge in this kernel"
# STP off and no forwarding delay: ports forward as soon as they are up.
ip -n "$sw" link set br0 type bridge stp_state 0 forward_delay 0
ip -n "$sw" link set br0 up
mkdir -p "$dir"
: >"$dir/hostfile"
: >"$dir/hosts"
for ((i = 0; i < n; ++i)); do
  ns="$prefix-h$i" addr=$(addr_of "$i")
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  # IPv4 only: no IPv6 link-local chatter on the shaped links.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true
  # Made in the root namespace under prefixed names, then each end moved to
  # its namespace; the host's end is renamed eth0 there.
  ip link add "$prefix-h${i}e" type veth peer name "$prefix-p$i"
  ip link set "$prefix-h${i}e" netns "$ns"
  ip link set "$prefix-p$i" netns "$sw"
  ip -n "$ns" link set "$prefix-h${i}e" name eth0
  ip -n "$ns" addr add "$addr/15" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$sw" link set "$prefix-p$i" master br0
  ip -n "$sw" link set "$prefix-p$i" up
  shape "$ns" eth0 "$netem"
  shape "$sw" "$prefix-p$i" 0
  echo "$addr slots=$slots" >>"$dir/hostfile"
  echo "$addr $ns" >>"$dir/hosts"
done

# The rsh agent: Open MPI runs "agent HOST COMMAND..." as it would run ssh;
# like ssh, the command words are joined and given to a shell, here inside
# the host's namespace.
cat >"$dir/agent" <<EOF
#!/bin/sh
# rsh agent of the emulated hosts (launch/emulate_hosts.sh, prefix $prefix):
# runs "COMMAND..." in HOST's network namespace, as ssh HOST COMMAND would.
host=\$1
shift
ns=\$(awk -v h="\$host" '\$1 == h || \$2 == h { print \$2; exit }' "$dir/hosts")
[ -n "\$ns" ] || { echo "agent: \$host is not an emulated host (see $dir/hosts)" >&2; exit 255; }
# Its own host name too (a UTS namespace): Open MPI keys its session
# folders in /tmp by host name, and daemons of one name collide there.
exec ip netns exec "\$ns" unshare --uts /bin/sh -c 'hostname "\$0" && exec /bin/sh -c "\$1"' "\$ns" "\$*"
EOF
root_flag=""
[[ $(id -u) -eq 0 ]] && root_flag="--allow-run-as-root"
cat >"$dir/mpirun" <<EOF
#!/bin/sh
# mpirun over the emulated hosts (launch/emulate_hosts.sh, prefix $prefix):
# starts in host 0; every byte between ranks goes over TCP on eth0.
# Ranks waiting in MPI yield their core (mpi_yield_when_idle): the hosts
# share this machine's cores with the kernel thread that moves their packets
# (ksoftirqd), which busy-waiting ranks would starve until the next tick.
#   $dir/mpirun -np P [more mpirun options] PROGRAM ARGS...
exec ip netns exec $prefix-h0 unshare --uts /bin/sh -c 'hostname $prefix-h0 && exec "\$0" "\$@"' \\
  mpirun $root_flag --hostfile "$dir/hostfile" \\
  --mca plm_rsh_agent "$dir/agent" --mca plm_rsh_no_tree_spawn 1 \\
  --mca btl tcp,self --mca btl_tcp_if_include 198.18.0.0/15 \\
  --mca oob_tcp_if_include 198.18.0.0/15 --mca pml ob1 --mca mpi_yield_when_idle 1 "\$@"
EOF
chmod +x "$dir/agent" "$dir/mpirun"

# Every host reaches host 0 over the switch: a TCP connect to a closed port
# is refused (answered) when the path works, unanswered or unreachable when
# not (this also fills the bridge's forwarding table).
for ((i = 1; i < n; ++i)); do
  err=$(ip netns exec "$prefix-h$i" timeout 3 bash -c "exec 3<>/dev/tcp/$(addr_of 0)/9" 2>&1) ||
    [[ "$err" == *refused* ]] ||
    die "host $prefix-h$i cannot reach $prefix-h0 at $(addr_of 0) over the bridge: ${err:-no answer in 3 s}"
done
trap - EXIT
shaping="rate $rate each way"
((netem == 0)) || shaping+=", delay $delay, loss $loss%"
echo "$me: $n hosts $prefix-h0..$prefix-h$((n - 1)) at $(addr_of 0)..$(addr_of $((n - 1))) on bridge $sw/br0, $shaping"
echo "  hostfile $dir/hostfile ($slots slots each), rsh agent $dir/agent"
echo "  run:  $dir/mpirun -np $((n * slots)) PROGRAM ARGS...   remove: $0 --down --prefix $prefix"
