# virtio_rng.S - drives a virtio-mmio entropy device (DeviceID 4) by polling.
#
# Picks entropy device number <k> (rng.dev=<k>, 0-based among the entropy
# devices; default 0), initialises it (features: VERSION_1 only; one
# requestq), then twice posts one zeroed, device-writable 64-byte buffer
# (descriptor 0 into the first buffer, then descriptor 1 into a second one),
# notifies and polls for it.
#
# Output, in this order (each line ends with "\n"):
#   rng-len: <used length of the first request, decimal (<= 64)>
#   rng-bytes: <the first rng-len bytes of the first buffer, hex>
#   rng-bytes2: <the bytes the second request returned (its used length), hex>
#   rng-done
# then resets.
# Errors: "rng-error: ..." (see virtio.inc; here also "no device", "bad used
# id", "bad used len" (more than 64)), "rng-timeout" (a request did not
# complete within VIO_POLLS polls); each then resets.
        .include "lib.inc"
        .include "virtio.inc"

        .equ VIRTIO_ID_RNG,     4
        .equ RNG_BYTES,         64

        ELF_GUEST_ENTRY

main:
        mov rdi, r15
        call vio_setup

        mov edi, VIRTIO_ID_RNG
        lea rsi, [rip + key_dev]
        call vio_select                 # rax = base, rcx = entropy devices
        test rax, rax
        jnz 1f
        VIO_FAIL "no device"
1:      mov rbx, rax
        mov rdi, VIRTIO_F_VERSION_1
        mov esi, 1
        call vio_init

        xor eax, eax                    # descriptor 0 -> rng_buf1
        lea rsi, [rip + rng_buf1]
        call rng_request                # ecx = used length
        PRINT "rng-len: "
        mov eax, ecx
        call put_dec64
        call newline
        PRINT "rng-bytes: "
        call put_hex_bytes
        call newline

        mov eax, 1                      # descriptor 1 -> rng_buf2
        lea rsi, [rip + rng_buf2]
        call rng_request
        PRINT "rng-bytes2: "
        call put_hex_bytes
        call newline
        PRINT "rng-done\n"
        jmp reset

# rng_request: EAX = descriptor index, RSI = a RNG_BYTES buffer.  Zeroes the
# buffer, makes descriptor EAX a device-writable RNG_BYTES-byte descriptor
# for it, publishes it on queue 0, notifies and polls.  Returns ECX = the
# used length (checked <= RNG_BYTES).
rng_request:
        push rax
        push rdx
        push rdi
        push r8
        mov rdi, rsi
        mov ecx, RNG_BYTES
        push rax
        xor eax, eax
        rep stosb                       # zero it
        pop rax
        lea rdi, [rip + vio_queues]     # queue 0
        mov ecx, RNG_BYTES
        mov edx, VIRTQ_DESC_F_WRITE
        xor r8d, r8d
        call vq_desc
        mov r8d, eax                    # r8 = the head we expect back
        push rsi
        mov esi, eax
        call vq_push
        pop rsi
        call vq_notify
        mov ecx, VIO_POLLS
        call vq_wait                    # eax = id, edx = len
        jnc 1f
        jmp vio_timeout
1:      cmp eax, r8d
        je 2f
        VIO_FAIL "bad used id"
2:      cmp edx, RNG_BYTES
        jbe 3f
        VIO_FAIL "bad used len"
3:      mov ecx, edx
        pop r8
        pop rdi
        pop rdx
        pop rax
        ret

        .section .rodata
vio_name:       .asciz "rng"
key_dev:        .asciz "rng.dev"

        .section .bss
        .balign 64
rng_buf1:       .skip RNG_BYTES
rng_buf2:       .skip RNG_BYTES
