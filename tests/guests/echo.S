# echo.S - reads one line from the serial port and prints it back.
# Prints "echo-ready", then polls COM1 (LSR bit 0, then RBR) byte by byte
# until '\n'.  '\r' bytes are dropped; the line is kept up to LINE_MAX bytes
# (the rest is read and dropped).  Then it prints "echo: <line>" and resets.
# If ECHO_POLLS consecutive polls see no byte, it prints "echo-timeout" and
# resets instead.  (Tests feed the VMM's stdin.)
        .include "lib.inc"

        .equ LINE_MAX, 256
        .equ ECHO_POLLS, 200000         # idle polls allowed between two bytes

        ELF_GUEST_ENTRY

main:
        PRINT "echo-ready\n"
        lea rdi, [rip + line_buf]       # rdi = write position
        xor ebx, ebx                    # rbx = bytes stored
1:      mov ecx, ECHO_POLLS             # fresh idle budget for each byte
        call getc_poll
        jc 4f
        cmp al, '\n'
        je 3f
        cmp al, '\r'
        je 1b
        cmp ebx, LINE_MAX
        jae 1b                          # buffer full: drop the byte
        mov [rdi + rbx], al
        inc ebx
        jmp 1b
3:      PRINT "echo: "
        mov rsi, rdi
        mov rcx, rbx
        call putsn
        call newline
        jmp reset
4:      PRINT "echo-timeout\n"
        jmp reset

        .bss
line_buf:
        .skip LINE_MAX
