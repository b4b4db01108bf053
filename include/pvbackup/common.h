/* Included first by every .c file of pvbackup: common includes and banned functions. */
#ifndef PVBACKUP_COMMON_H
#define PVBACKUP_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PVB_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define PVB_UNUSED(x) ((void)(x))

#if defined(__GNUC__)
#define PVB_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define PVB_PRINTF(fmt_index, first_arg)
#endif

/* Unbounded or easily misused string functions: use snprintf and pvb_buf instead. */
#if defined(__GNUC__) && !defined(PVB_NO_POISON)
#include <stdio.h>
#include <string.h>
#pragma GCC poison sprintf strcpy strcat strncpy strtok gets
#endif

#endif
