/* Ops of the "ml" family: X(domain, op_type, symbol); the kernel file
 * defines `const ts_op ts_op_<symbol>`. One line per op. */
#define TS_OPS_ML(X)
