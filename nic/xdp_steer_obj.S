/* Embeds the steering program's BPF object (built from nic/xdp_steer.bpf.c by the
 * Makefile, path in XDP_STEER_OBJ) so shmnetd needs no file at run time. */
    .section .rodata
    .balign 8
    .global shmnet_xdp_steer_obj_len
    .type shmnet_xdp_steer_obj_len, @object
    .size shmnet_xdp_steer_obj_len, 8
shmnet_xdp_steer_obj_len:
    .quad 2f - 1f
    .global shmnet_xdp_steer_obj
    .type shmnet_xdp_steer_obj, @object
    .size shmnet_xdp_steer_obj, 2f - 1f
shmnet_xdp_steer_obj:
1:
    .incbin XDP_STEER_OBJ
2:
    .section .note.GNU-stack, "", @progbits
