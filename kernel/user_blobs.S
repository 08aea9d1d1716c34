/* The user programs, embedded in the image (USER_APP is the path of the linked program). */
	.section .rodata
	.balign 4096
	.globl _user_app_start, _user_app_end
_user_app_start:
	.incbin USER_APP
_user_app_end:
