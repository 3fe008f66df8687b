"""`borrowed`: a kernel's arrays as views that own no reference, for the length of one call.

numba reference-counts every array variable: a helper inlined into a loop binds its array
arguments to new variables, and each binding takes and drops a reference (two calls, each an
atomic add on the array's counter). numba's pruning pass removes such pairs only where the control
flow is simple; in a replay loop's body (a state machine, a level scan, a window slide) most
survive. On the bench day the capture kernel took and dropped about 40 references per diff,
which were three quarters of its time (4.2 s of 12 M diffs; 1.0 s borrowed).

A borrowed view is the same array (data, shape, strides) with no owner (a null meminfo), so the
counting is a null check. It is valid while the caller holds the arrays it came from, which a
kernel's caller does for the whole call: a kernel borrows its arguments at the top and never
returns or keeps a borrowed array. Anything else passes through: scalars and records are not
counted, and a (named) tuple is rebuilt from its borrowed fields.
"""

from __future__ import annotations

from numba.core import cgutils, types
from numba.extending import intrinsic


def _borrow(context, builder, typ, value):
    if isinstance(typ, types.Array):
        view = context.make_array(typ)(context, builder, value=value)  # a copy of the struct
        view.meminfo = cgutils.get_null_value(view.meminfo.type)
        view.parent = cgutils.get_null_value(view.parent.type)
        return view._getvalue()
    if isinstance(typ, types.BaseTuple):
        fields = [_borrow(context, builder, t, builder.extract_value(value, k)) for k, t in enumerate(typ)]
        return context.make_tuple(builder, typ, fields)
    return value


@intrinsic
def borrowed(typingctx, value):
    """`value` (an array, or a tuple of arrays, named or nested) as views owning no reference."""

    def codegen(context, builder, signature, args):
        return _borrow(context, builder, value, args[0])

    return value(value), codegen
