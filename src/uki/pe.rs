//! The parts of a PE32+ image (the EFI executable format) a UKI needs:
//! finding a section, and appending sections to systemd-stub as ukify
//! does. Only the headers are declared here; everything else in the
//! image is carried over byte for byte.
//!
//! ```text
//! 0x00              DOS header ("MZ"; e_lfanew at 0x3c)
//! e_lfanew          "PE\0\0", COFF header (20 bytes)
//!                   optional header (PE32+, magic 0x20b), data directories
//!                   section table: NumberOfSections × 40 bytes
//! SizeOfHeaders     section data, each at a FileAlignment multiple
//! ```
//!
//! A new section's header goes in the free space after the table (the
//! stub leaves room before SizeOfHeaders), its data at the end of the
//! file, its address after the last section's, so sections stay in
//! ascending, non-overlapping order, which systemd-stub checks.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// COFF file header, after the "PE\0\0" signature.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct FileHeader {
    machine: U16,
    number_of_sections: U16,
    time_date_stamp: U32,
    pointer_to_symbol_table: U32,
    number_of_symbols: U32,
    size_of_optional_header: U16,
    characteristics: U16,
}

/// One section table entry.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct SectionHeader {
    /// NUL-padded, at most 8 bytes.
    name: [u8; 8],
    virtual_size: U32,
    virtual_address: U32,
    size_of_raw_data: U32,
    pointer_to_raw_data: U32,
    pointer_to_relocations: U32,
    pointer_to_linenumbers: U32,
    number_of_relocations: U16,
    number_of_linenumbers: U16,
    characteristics: U32,
}

const PE32_PLUS: u16 = 0x20b;
const MACHINE_X86_64: u16 = 0x8664;
/// Offsets in the PE32+ optional header.
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_SECTION_ALIGNMENT: usize = 32;
const OPT_FILE_ALIGNMENT: usize = 36;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_CHECKSUM: usize = 64;
/// The certificate table (Authenticode signature) data directory.
const OPT_SECURITY_DIRECTORY: usize = 112 + 4 * 8;
/// Initialized data, readable.
const DATA_SECTION: u32 = 0x0000_0040 | 0x4000_0000;

/// Where the headers are, checked.
struct Layout {
    file_header: usize,
    optional: usize,
    table: usize,
    sections: usize,
}

fn layout(image: &[u8]) -> Result<Layout, String> {
    let get = |at: usize, n: usize| {
        at.checked_add(n)
            .and_then(|end| image.get(at..end))
            .ok_or_else(|| format!("truncated at offset {at:#x}"))
    };
    if !image.starts_with(b"MZ") {
        return Err("not a PE image (no MZ header)".into());
    }
    let lfanew = u32::from_le_bytes(get(0x3c, 4)?.try_into().unwrap()) as usize;
    if get(lfanew, 4)? != b"PE\0\0" {
        return Err("not a PE image (no PE signature)".into());
    }
    let file_header = lfanew.checked_add(4).ok_or("e_lfanew out of range")?;
    let fh = FileHeader::read_from_bytes(get(file_header, 20)?).expect("20 bytes");
    if fh.machine.get() != MACHINE_X86_64 {
        return Err(format!("machine {:#x}, not x86-64", fh.machine.get()));
    }
    let optional = file_header + 20;
    if u16::from_le_bytes(get(optional, 2)?.try_into().unwrap()) != PE32_PLUS {
        return Err("not a PE32+ image".into());
    }
    let table = optional + fh.size_of_optional_header.get() as usize;
    let sections = fh.number_of_sections.get() as usize;
    get(table, sections * 40)?;
    if (fh.size_of_optional_header.get() as usize) < OPT_SECURITY_DIRECTORY + 8 {
        return Err("optional header too short".into());
    }
    Ok(Layout {
        file_header,
        optional,
        table,
        sections,
    })
}

fn headers(image: &[u8], l: &Layout) -> Vec<SectionHeader> {
    (0..l.sections)
        .map(|i| {
            let at = l.table + i * 40;
            SectionHeader::read_from_bytes(&image[at..at + 40]).expect("checked by layout")
        })
        .collect()
}

fn read_u32(image: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(image[at..at + 4].try_into().unwrap())
}

fn write_u32(image: &mut [u8], at: usize, v: u32) {
    image[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn align(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// The bytes of section `name` (its virtual size, as systemd-stub reads
/// it), if the image has one.
pub fn section<'a>(image: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, String> {
    let l = layout(image)?;
    for h in headers(image, &l) {
        let len = h.name.iter().position(|&b| b == 0).unwrap_or(8);
        if &h.name[..len] == name.as_bytes() {
            let start = h.pointer_to_raw_data.get() as usize;
            let size = h.virtual_size.get().min(h.size_of_raw_data.get()) as usize;
            return start
                .checked_add(size)
                .and_then(|end| image.get(start..end))
                .map(Some)
                .ok_or_else(|| format!("section {name} runs past the end of the file"));
        }
    }
    Ok(None)
}

/// `stub` with `sections` (name, bytes) appended in the order given.
pub fn add_sections(stub: &[u8], sections: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    let l = layout(stub)?;
    if read_u32(stub, l.optional + OPT_SECURITY_DIRECTORY + 4) != 0 {
        return Err("the stub is signed already; sections must be added before signing".into());
    }
    let existing = headers(stub, &l);
    let section_alignment = u64::from(read_u32(stub, l.optional + OPT_SECTION_ALIGNMENT));
    let file_alignment = u64::from(read_u32(stub, l.optional + OPT_FILE_ALIGNMENT));
    let size_of_headers = read_u32(stub, l.optional + OPT_SIZE_OF_HEADERS) as usize;
    // As the PE format allows: powers of two, files 512 B to 64 KiB.
    if !file_alignment.is_power_of_two()
        || !(512..=65536).contains(&file_alignment)
        || !section_alignment.is_power_of_two()
        || section_alignment < file_alignment
        || section_alignment > 1 << 21
    {
        return Err(format!(
            "file alignment {file_alignment:#x}, section alignment {section_alignment:#x}: not a valid PE image"
        ));
    }
    let first_data = existing
        .iter()
        .map(|h| h.pointer_to_raw_data.get() as usize)
        .filter(|&p| p != 0)
        .min()
        .unwrap_or(size_of_headers)
        .min(size_of_headers);
    let table_end = l.table + (l.sections + sections.len()) * 40;
    if table_end > first_data {
        return Err(format!(
            "no room for {} more section headers (the table would end at {table_end:#x}, data starts at {first_data:#x})",
            sections.len()
        ));
    }
    for (name, _) in sections {
        if name.len() > 8 || stub_has(&existing, name) {
            return Err(format!("section name {name}: too long or already present"));
        }
    }

    let mut out = stub.to_vec();
    // A COFF symbol table after the sections (the stub's debugging aid)
    // is dropped: left in place it would sit between sections, in bytes
    // the Authenticode hash does not cover.
    let raw_end = existing
        .iter()
        .map(|h| h.pointer_to_raw_data.get() as usize + h.size_of_raw_data.get() as usize)
        .max()
        .unwrap_or(size_of_headers);
    let fh =
        FileHeader::read_from_bytes(&stub[l.file_header..l.file_header + 20]).expect("20 bytes");
    let symbols = fh.pointer_to_symbol_table.get() as usize;
    if symbols != 0 && symbols >= raw_end && raw_end >= size_of_headers && raw_end <= out.len() {
        out.truncate(raw_end);
        let fields = l.file_header + 8..l.file_header + 16;
        out[fields].fill(0);
    }
    let mut next_va = existing
        .iter()
        .map(|h| u64::from(h.virtual_address.get()) + u64::from(h.virtual_size.get()))
        .max()
        .unwrap_or(0);
    let mut added_data = 0u64;
    for (i, (name, data)) in sections.iter().enumerate() {
        let va = align(next_va, section_alignment);
        let raw = align(out.len() as u64, file_alignment);
        let raw_size = align(data.len() as u64, file_alignment);
        let too_big =
            |v: u64| u32::try_from(v).map_err(|_| format!("section {name}: image over 4 GiB"));
        let mut header = SectionHeader {
            name: [0; 8],
            virtual_size: U32::new(too_big(data.len() as u64)?),
            virtual_address: U32::new(too_big(va)?),
            size_of_raw_data: U32::new(too_big(raw_size)?),
            pointer_to_raw_data: U32::new(too_big(raw)?),
            pointer_to_relocations: U32::new(0),
            pointer_to_linenumbers: U32::new(0),
            number_of_relocations: U16::new(0),
            number_of_linenumbers: U16::new(0),
            characteristics: U32::new(DATA_SECTION),
        };
        header.name[..name.len()].copy_from_slice(name.as_bytes());
        out.resize(raw as usize, 0);
        out.extend_from_slice(data);
        out.resize((raw + raw_size) as usize, 0);
        let at = l.table + (l.sections + i) * 40;
        out[at..at + 40].copy_from_slice(header.as_bytes());
        next_va = va + data.len() as u64;
        added_data += raw_size;
    }
    let count = u16::try_from(l.sections + sections.len()).map_err(|_| "too many sections")?;
    out[l.file_header + 2..l.file_header + 4].copy_from_slice(&count.to_le_bytes());
    let size_of_image = u32::try_from(align(next_va, section_alignment))
        .map_err(|_| "image over 4 GiB".to_string())?;
    write_u32(&mut out, l.optional + OPT_SIZE_OF_IMAGE, size_of_image);
    let initialized = u64::from(read_u32(&out, l.optional + OPT_SIZE_OF_INITIALIZED_DATA));
    write_u32(
        &mut out,
        l.optional + OPT_SIZE_OF_INITIALIZED_DATA,
        u32::try_from(initialized + added_data).unwrap_or(u32::MAX),
    );
    // Firmware ignores it for EFI images; a stale one would only mislead.
    write_u32(&mut out, l.optional + OPT_CHECKSUM, 0);
    Ok(out)
}

fn stub_has(headers: &[SectionHeader], name: &str) -> bool {
    headers.iter().any(|h| {
        let len = h.name.iter().position(|&b| b == 0).unwrap_or(8);
        &h.name[..len] == name.as_bytes()
    })
}
