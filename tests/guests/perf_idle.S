# perf_idle.S - the idle pod-VM of the performance suite (memory, density,
# pause/resume baselines): prints "idle-ready" and halts with interrupts
# off.  `hlt` is handled inside KVM, so the vCPU sleeps and costs the host
# nothing; the guest never ends by itself.
        .include "lib.inc"

        ELF_GUEST_ENTRY

main:
        PRINT "idle-ready\n"
1:      cli
        hlt
        jmp 1b
