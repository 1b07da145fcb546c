internal import CPreforkShims

/// The offset of the first occurrence of `needle` in `haystack`, or nil when there is none.
/// An empty needle is found at offset 0.
///
/// The corresponding C function is `memmem(3)` (a GNU extension the Swift Glibc module does not
/// export).
///
/// Inlinable: a handler searches every message it reads, and the checks around the call would
/// otherwise cost as much as a short search.
@inlinable @inline(__always)
public func memmem(_ haystack: UnsafeRawBufferPointer, _ needle: UnsafeRawBufferPointer) -> Int? {
    guard !needle.isEmpty else { return 0 }
    guard let base = haystack.baseAddress, let needleBase = needle.baseAddress, haystack.count >= needle.count
    else { return nil }
    guard let found = _memmem(base, haystack.count, needleBase, needle.count) else { return nil }
    return found - base
}

/// The C library's `memmem`, behind a symbol inlinable code may call (the C module is an
/// implementation detail of this one).
@usableFromInline
func _memmem(_ haystack: UnsafeRawPointer, _ count: Int, _ needle: UnsafeRawPointer, _ needleCount: Int)
    -> UnsafeRawPointer?
{
    pf_memmem(haystack, count, needle, needleCount).map { UnsafeRawPointer($0) }
}
