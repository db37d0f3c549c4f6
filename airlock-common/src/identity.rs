//! The content fingerprint of an executable, computed exactly as the kernel
//! computes it in `exec_identity.h` (`content_fingerprint`).
//!
//! Input: the file's first [`HEAD_LEN`] bytes, zero-padded (the kernel's
//! `bprm->buf`), and the file's size. For an ELF64 little-endian file only
//! what the kernel and ld.so act on is hashed: `e_type`, `e_machine`,
//! `e_entry`, `e_phoff`, `e_phentsize`, `e_phnum`, and of each program header
//! that lies wholly in the head `p_type`, `p_flags`, `p_offset`, `p_vaddr`,
//! `p_filesz`, `p_memsz`. Anything else (scripts, other formats) hashes all
//! head bytes. The size is hashed last, in both cases.

use std::io::Read;
use std::path::Path;

use crate::abi::{FNV_OFFSET, FNV_PRIME, HEAD_LEN};

fn step(h: u64, byte: u8) -> u64 {
    (h ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
}

fn range(h: u64, head: &[u8; HEAD_LEN], off: usize, len: usize) -> u64 {
    head[off..off + len].iter().fold(h, |h, &b| step(h, b))
}

/// Size of an ELF64 program header; other sizes are not walked (nor does the kernel).
const PHDR64: usize = 56;
/// Program headers the kernel looks at (as many as fit in the head).
const MAX_PHDRS: usize = 4;

/// The fingerprint of a file whose first bytes are `head` (zero-padded) and whose size is `size`.
pub fn fingerprint(head: &[u8; HEAD_LEN], size: u64) -> u64 {
    let mut h = FNV_OFFSET;
    if head[..4] == *b"\x7fELF" && head[4] == 2 && head[5] == 1 {
        h = step(h, b'E');
        h = range(h, head, 16, 4);
        h = range(h, head, 24, 16);
        h = range(h, head, 54, 4);
        let phoff = u64::from_le_bytes(head[32..40].try_into().unwrap_or([0; 8]));
        let phentsize = u16::from_le_bytes([head[54], head[55]]) as usize;
        let phnum = u16::from_le_bytes([head[56], head[57]]) as usize;
        if phentsize == PHDR64 {
            for i in 0..MAX_PHDRS.min(phnum) {
                let off = phoff.wrapping_add((i * PHDR64) as u64);
                if off > (HEAD_LEN - PHDR64) as u64 {
                    break;
                }
                let off = off as usize;
                h = range(h, head, off, 24);
                h = range(h, head, off + 32, 16);
            }
        }
    } else {
        h = step(h, b'R');
        h = range(h, head, 0, HEAD_LEN);
    }
    size.to_le_bytes().iter().fold(h, |h, &b| step(h, b))
}

/// The fingerprint of the file at `path` (symlinks followed), and the size it was taken at.
pub fn fingerprint_file(path: &Path) -> std::io::Result<(u64, u64)> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut head = [0u8; HEAD_LEN];
    let mut filled = 0;
    while filled < HEAD_LEN {
        let n = file.read(&mut head[filled..])?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok((fingerprint(&head, size), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elf_head() -> [u8; HEAD_LEN] {
        let mut h = [0u8; HEAD_LEN];
        h[..6].copy_from_slice(b"\x7fELF\x02\x01");
        h[16] = 3; // ET_DYN
        h[18] = 62; // x86-64
        h[24..32].copy_from_slice(&0x1040u64.to_le_bytes());
        h[32..40].copy_from_slice(&64u64.to_le_bytes());
        h[54] = 56;
        h[56] = 3;
        for i in 0..3 {
            let off = 64 + i * 56;
            h[off] = (i + 1) as u8;
            h[off + 32] = 0x40 + i as u8;
        }
        h
    }

    #[test]
    fn bytes_the_loader_ignores_do_not_change_an_elf_fingerprint() {
        let head = elf_head();
        let base = fingerprint(&head, 4096);
        let mut padded = head;
        padded[9] = 0xaa; // e_ident padding
        padded[40] = 0x55; // e_shoff
        padded[64 + 24] = 0x77; // p_paddr of the first program header
        padded[250] = 0x11; // past the walked program headers
        assert_eq!(fingerprint(&padded, 4096), base);
        let mut moved = head;
        moved[24] = 0x50; // e_entry
        assert_ne!(fingerprint(&moved, 4096), base);
        let mut seg = head;
        seg[64 + 32] = 0x99; // p_filesz
        assert_ne!(fingerprint(&seg, 4096), base);
        assert_ne!(fingerprint(&head, 4097), base, "the size is part of the identity");
    }

    #[test]
    fn other_files_hash_every_head_byte() {
        let mut script = [0u8; HEAD_LEN];
        script[..10].copy_from_slice(b"#!/bin/sh\n");
        let base = fingerprint(&script, 10);
        let mut other = script;
        other[255] = 1;
        assert_ne!(fingerprint(&other, 10), base);
    }
}
