# hello.S - the smallest podvm test guest.
# Prints "Hello from podvm guest" and resets through the i8042 (VMM exits 0).
        .include "lib.inc"

        ELF_GUEST_ENTRY

main:
        PRINT "Hello from podvm guest\n"
        jmp reset
