"""When does a rejection name the mistake? (shared by the test and the report)"""

import re

GENERIC = {"wrong_values", "unhandled_result"}
# Fragments of raw PyTorch / Python error text: a "raised" message that still carries one of these has not
# been translated into the book's words.
RAW_ERROR = re.compile(
    "|".join(
        [
            r"mat1 and mat2 shapes cannot be multiplied",
            r"The size of tensor a \(\d+\) must match",
            r"Dimension out of range",
            r"Boolean value of Tensor with more than one",
            r"view size is not compatible",
            r"Can't call numpy\(\)",
            r"does not require grad and does not have a grad_fn",
            r"expected scalar type",
            r"result type \w+ can't be cast",
            r"is invalid for input of size",
            r"is out of bounds for dimension",
            r"values to unpack",
            r"object is not subscriptable",
            r"object is not callable",
            r"unsupported operand type",
            r"object has no attribute",
            r"list index out of range",
            r"number of dims don't match",
            r"Expected all tensors to be on the same device",
            r"cannot unpack non-iterable",
            r"only integer tensors of a single element",
            r"cannot be converted to Scalar",
            r"only supports boolean masks",
            r"Expected size for first two dimensions of batch2 tensor",
            r"must have the same dtype",
            r"Class values must be non-negative",
            r"negative dimensions are not allowed",
            r"division by zero",
            r"not supported between instances of",
            r"Tensors must have same number of dimensions",
            r"Sizes of tensors must match except in dimension",
            r"stack expects",
            r"einsum\(\): ",
            r"expected m1 and m2 to have the same dtype",
            r"Expected object of scalar type",
        ]
    )
)


def names_the_mistake(result) -> bool:
    if result.passed:
        return False
    if result.diagnosis in GENERIC:
        return False
    if result.diagnosis == "raised" and RAW_ERROR.search(result.message or ""):
        return False
    return True
