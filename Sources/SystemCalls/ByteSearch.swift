internal import CPreforkShims

/// The offset of the first occurrence of `needle` in `haystack`, or nil when there is none.
/// An empty needle is found at offset 0.
///
/// The corresponding C function is `memmem(3)` (a GNU extension the Swift Glibc module does not
/// export).
public func memmem(_ haystack: UnsafeRawBufferPointer, _ needle: UnsafeRawBufferPointer) -> Int? {
    guard !needle.isEmpty else { return 0 }
    guard let base = haystack.baseAddress, let needleBase = needle.baseAddress, haystack.count >= needle.count
    else { return nil }
    guard let found = pf_memmem(base, haystack.count, needleBase, needle.count) else { return nil }
    return UnsafeRawPointer(found) - base
}
