# triplefault.S - ends with a triple fault (KVM_EXIT_SHUTDOWN) on purpose.
# Prints "about to triple fault" then executes ud2.  The VMM's IDT has limit
# 0, so the #UD cannot be delivered -> #DF cannot be delivered -> triple
# fault.  This guest must never reset by itself.
        .include "lib.inc"

        ELF_GUEST_ENTRY

main:
        PRINT "about to triple fault\n"
        ud2                             # invalid opcode -> triple fault
        # Not reached.  If it ever is (a VMM that swallows the fault), stay
        # here forever rather than exiting cleanly.
1:      cli
        hlt
        jmp 1b
