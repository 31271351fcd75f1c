#!/bin/sh
# netns.sh DIR COMMAND...: runs `mpirun -np 2 COMMAND` (in DIR) with its two ranks in two
# network namespaces joined by a veth pair, as two nodes 10.199.N.1 and 10.199.N.2 talking
# OpenMPI over TCP only: the multi-node path of docs/distributed.md on one machine. mpirun
# reaches the second "node" through a remote-shell agent that enters its namespace instead
# of ssh. Exit 77: namespaces cannot be made here (not root, no iproute2).
set -u
dir=$1; shift
id=$$
a=ltl${id}a b=ltl${id}b net=10.199.$((id % 250))
command -v ip >/dev/null && ip netns add "$a" 2>/dev/null || { echo "netns: cannot create a network namespace"; exit 77; }
cleanup() { ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null; rm -f "$dir/rsh_$id"; }
trap cleanup EXIT
ip netns add "$b" && ip link add "${a}v" type veth peer name "${b}v" &&
ip link set "${a}v" netns "$a" && ip link set "${b}v" netns "$b" &&
ip -n "$a" addr add "$net.1/24" dev "${a}v" && ip -n "$b" addr add "$net.2/24" dev "${b}v" &&
ip -n "$a" link set "${a}v" up && ip -n "$b" link set "${b}v" up &&
ip -n "$a" link set lo up && ip -n "$b" link set lo up || { echo "netns: cannot wire the namespaces"; exit 77; }
# the remote shell: `rsh_ID HOST COMMAND...` runs COMMAND in the namespace of HOST
printf '#!/bin/sh\nshift\nexec ip netns exec %s sh -c "$*"\n' "$b" > "$dir/rsh_$id"
chmod +x "$dir/rsh_$id"
cd "$dir" && ip netns exec "$a" mpirun --allow-run-as-root --timeout 120 -np 2 --host "$net.1:1,$net.2:1" \
    --mca plm_rsh_agent "$dir/rsh_$id" --mca btl tcp,self --mca btl_tcp_if_include "$net.0/24" \
    --mca oob_tcp_if_include "$net.0/24" "$@"
