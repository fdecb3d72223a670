"""Small builders shared by the planner tests."""

from perfsim import resolve_target
from perfsim.mm.build import Population, single_move_space
from perfsim.planner import MoveRequest, plan_mremap

K, M, G = 1 << 10, 1 << 20, 1 << 30
# Spec addresses (docs/kernel-rules.md, Worked examples): A and B are 2 MiB aligned, not 1 GiB aligned.
A, B = 0x7F0000200000, 0x7F4000600000
PUD_SRC, PUD_DST = 0x7F0000000000, 0x7F4000000000


def kernel_arch_grid() -> list[tuple[str, str]]:
    """(kernel, arch) of four kernels (6.6, 6.12, 6.18, 7.3; those shipped) on every shipped
    arch: the grid the walk's shortcut tests hold each shortcut to its definition on."""
    from perfsim.profiles import arch_names, kernel_names

    return [(k, a) for k in ("6.6", "6.12", "6.18", "7.3") for a in arch_names()
            if k in kernel_names()]


def plan(src, dst, length, *, kernel="6.18", arch="x86_64", guard_below_src=False,
         guard_below_dst=False, backing="anon", thp=False, populate="full", cpus=1, **req):
    t = resolve_target(kernel, arch)
    sp = single_move_space(t, src=src, length=length, backing=backing, thp=thp,
                           populate=Population.parse(populate),
                           guard_below_src=guard_below_src,
                           guard_below_dst=dst if guard_below_dst else None, cpus=cpus)
    return plan_mremap(sp, MoveRequest(src, length, new_addr=dst, **req), t)


#: Shipped profiles fitted by ``perfsim calibrate`` (C-timed, with its shrinks) on a machine
#: this project has run on: a live test prices what it times on this machine with the one
#: fitted on a CPU like this one (:func:`profile_of_this_machine`).
LIVE_PROFILES = ("kvm-epyc", "kvm-xeon")


def profile_of_this_machine() -> tuple[str | None, str]:
    """``(name, why)``: the first of :data:`LIVE_PROFILES` whose recorded ``machine`` names
    this CPU's model, or ``(None, the reason a live test skips)``."""
    from perfsim.cost import load_cost_profile
    from perfsim.host.measure import host_info

    model = host_info()["cpu_model"]
    for name in LIVE_PROFILES:
        cpu = load_cost_profile(name).machine.split(",")[0].strip()
        if cpu and model.startswith(cpu):
            return name, f"{name} was fitted on a {cpu}"
    return None, (f"no shipped cost profile was fitted on a CPU like this one ({model}); fit "
                  "one with perfsim calibrate")


def bytearray_written(e, plan) -> int:
    """What CPython's bytearray has written of its block by the block's next resize (the
    ``written`` of :func:`perfsim.host.program.replay_plans` for the recorded python3
    programs that grow a bytearray by 1 MiB appends): its logical size is a whole number of
    those appends, the largest that fits the allocation, behind glibc's 16-byte chunk
    header."""
    mib = 1 << 20
    return 16 + (((e.new_len or e.old_len) - 16) // mib) * mib
