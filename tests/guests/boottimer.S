# boottimer.S - exercises the boot-timer device.
# Prints "boottimer-start", writes the magic byte 123 to port 0x3f0 (the VMM
# logs the time since start: "user space reached"), prints
# "boottimer-done" and resets.
        .include "lib.inc"

        ELF_GUEST_ENTRY

main:
        PRINT "boottimer-start\n"
        mov dx, BOOT_TIMER_PORT         # one byte write of 123 to port 0x3f0
        mov al, BOOT_TIMER_MAGIC
        out dx, al
        PRINT "boottimer-done\n"
        jmp reset
