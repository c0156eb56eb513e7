/**
 * glibc's strerror(3) in the C locale, which Xen's tools print after "Error <n>: " (they are run
 * with LC_ALL=C). Only the numbers a live-patch hypercall or a payload file can give are named;
 * any other prints as glibc prints a number it has no text for. Pure.
 */
const GLIBC_STRERROR: Readonly<Record<number, string>> = {
  0: 'Success',
  1: 'Operation not permitted',
  2: 'No such file or directory',
  3: 'No such process',
  4: 'Interrupted system call',
  5: 'Input/output error',
  6: 'No such device or address',
  7: 'Argument list too long',
  8: 'Exec format error',
  9: 'Bad file descriptor',
  11: 'Resource temporarily unavailable',
  12: 'Cannot allocate memory',
  13: 'Permission denied',
  14: 'Bad address',
  16: 'Device or resource busy',
  17: 'File exists',
  19: 'No such device',
  20: 'Not a directory',
  21: 'Is a directory',
  22: 'Invalid argument',
  23: 'Too many open files in system',
  24: 'Too many open files',
  27: 'File too large',
  28: 'No space left on device',
  34: 'Numerical result out of range',
  36: 'File name too long',
  38: 'Function not implemented',
  40: 'Too many levels of symbolic links',
  61: 'No data available',
  75: 'Value too large for defined data type',
  95: 'Operation not supported',
  105: 'No buffer space available',
  110: 'Connection timed out',
};

/** strerror(n) as glibc 2.36 returns it in the C locale. */
export function glibcStrerror(n: number): string {
  return GLIBC_STRERROR[n] ?? `Unknown error ${n}`;
}
