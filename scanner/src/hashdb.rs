//! Whole-file hash signatures for files too large for one clamd stream.
//!
//! clamd matches `.hdb` (MD5) and `.hsb` (SHA-1, SHA-256) signatures against the hash of the
//! whole stream it receives. A segment is never the whole file, so for a file longer than the
//! stream limit Ferry does that part itself: [`HashSignatures`] reads the signature database
//! directory clamd loaded (plain `.hdb`/`.hsb` files, and those inside `.cvd`/`.cld`/`.cud`
//! containers), and [`HashSignatures::find`] looks a file's size and digests up in it, as
//! clamd's `cli_scan_fmap` does (only the digests some signature of that size needs are
//! computed: [`HashSignatures::needed`]). Allow-list entries (`.fp`, `.sfp`) and ignored names
//! (`.ign2`) are honoured; engine-level bounds (`MinFL`/`MaxFL`) are not checked, so a retired
//! signature may still match: more detection, never less.
//!
//! [`HashDb`] keeps the parsed database and reloads it when the directory changes (a freshclam
//! update), as clamd does.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use md5::Digest as _;

/// Which digests of a file a lookup needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needed {
    /// MD5 (`.hdb`).
    pub md5: bool,
    /// SHA-1 (`.hsb`).
    pub sha1: bool,
    /// SHA-256 (`.hsb`).
    pub sha256: bool,
}

impl Needed {
    /// Whether any digest is needed at all.
    pub fn any(&self) -> bool {
        self.md5 || self.sha1 || self.sha256
    }
}

/// A file's digests (those that were needed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileDigests {
    /// MD5.
    pub md5: Option<[u8; 16]>,
    /// SHA-1.
    pub sha1: Option<[u8; 20]>,
    /// SHA-256.
    pub sha256: Option<[u8; 32]>,
}

impl FileDigests {
    /// Reads `reader` to its end once, computing the `needed` digests.
    pub fn compute(mut reader: impl Read, needed: Needed) -> io::Result<Self> {
        let mut md5 = needed.md5.then(md5::Md5::new);
        let mut sha1 = needed.sha1.then(sha1::Sha1::new);
        let mut sha256 = needed.sha256.then(sha2::Sha256::new);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let data = &buf[..n];
            if let Some(h) = &mut md5 {
                h.update(data);
            }
            if let Some(h) = &mut sha1 {
                h.update(data);
            }
            if let Some(h) = &mut sha256 {
                h.update(data);
            }
        }
        Ok(Self {
            md5: md5.map(|h| h.finalize().into()),
            sha1: sha1.map(|h| h.finalize().into()),
            sha256: sha256.map(|h| h.finalize().into()),
        })
    }

    fn get(&self, len: usize) -> Option<&[u8]> {
        match len {
            16 => self.md5.as_ref().map(|d| &d[..]),
            20 => self.sha1.as_ref().map(|d| &d[..]),
            32 => self.sha256.as_ref().map(|d| &d[..]),
            _ => None,
        }
    }
}

/// Hash signatures and allow-list entries: by file size (`None`: any size), then by digest.
#[derive(Debug, Default)]
pub struct HashSignatures {
    signatures: HashMap<Option<u64>, HashMap<Vec<u8>, String>>,
    allowed: HashMap<Option<u64>, HashSet<Vec<u8>>>,
    ignored: HashSet<String>,
    count: usize,
}

impl HashSignatures {
    /// Reads every hash signature in `dir` (clamd's `DatabaseDirectory`).
    pub fn load(dir: &Path) -> io::Result<Self> {
        let mut db = Self::default();
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(dir)?.map(|e| e.map(|e| e.path())).collect::<io::Result<_>>()?;
        entries.sort();
        for path in entries {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            match extension(name) {
                "cvd" | "cld" => db.add_container(File::open(&path)?, true)?,
                "cud" => db.add_container(File::open(&path)?, false)?,
                ext if is_hash_file(ext) => {
                    let text = std::fs::read(&path)?;
                    db.add_file(ext, &String::from_utf8_lossy(&text), false);
                }
                _ => {}
            }
        }
        Ok(db)
    }

    /// Signatures loaded.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no signature was loaded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The digests a file of `size` bytes needs for [`HashSignatures::find`]: only those some
    /// signature for that size (or for any size) is written in.
    pub fn needed(&self, size: u64) -> Needed {
        let mut needed = Needed::default();
        for table in [self.signatures.get(&Some(size)), self.signatures.get(&None)] {
            for hash in table.into_iter().flat_map(|t| t.keys()) {
                match hash.len() {
                    16 => needed.md5 = true,
                    20 => needed.sha1 = true,
                    _ => needed.sha256 = true,
                }
            }
        }
        needed
    }

    /// The signature a file of `size` bytes with `digests` matches, unless the allow-list
    /// clears it or its name is ignored.
    pub fn find(&self, size: u64, digests: &FileDigests) -> Option<&str> {
        let lookup = |sizes: &[Option<u64>], len: usize| {
            let digest = digests.get(len)?;
            sizes.iter().find_map(|s| self.signatures.get(s)?.get(digest))
        };
        let allowed = |len: usize| {
            digests.get(len).is_some_and(|digest| {
                [Some(size), None]
                    .iter()
                    .any(|s| self.allowed.get(s).is_some_and(|set| set.contains(digest)))
            })
        };
        if [16, 20, 32].into_iter().any(allowed) {
            return None;
        }
        [16, 20, 32]
            .into_iter()
            .filter_map(|len| lookup(&[Some(size), None], len))
            .find(|name| !self.ignored.contains(name.trim_end_matches(".UNOFFICIAL")))
            .map(String::as_str)
    }

    /// Adds the lines of one database file (`ext`: its extension).
    fn add_file(&mut self, ext: &str, text: &str, official: bool) {
        if ext == "ign2" {
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let name = line.split(':').next().unwrap_or(line);
                self.ignored.insert(name.to_owned());
            }
            return;
        }
        let allow = matches!(ext, "fp" | "sfp");
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let mut fields = line.split(':');
            let (Some(hash), Some(size), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Some(hash) = parse_hex(hash).filter(|h| matches!(h.len(), 16 | 20 | 32)) else {
                continue;
            };
            let size = match size {
                "*" => None,
                n => match n.parse::<u64>() {
                    Ok(n) => Some(n),
                    Err(_) => continue,
                },
            };
            if allow {
                self.allowed.entry(size).or_default().insert(hash);
            } else {
                let name = if official { name.to_owned() } else { format!("{name}.UNOFFICIAL") };
                self.signatures.entry(size).or_default().insert(hash, name);
                self.count += 1;
            }
        }
    }

    /// Adds the hash databases inside a `.cvd`/`.cld`/`.cud`: a 512-byte header, then a tar
    /// archive, gzip-compressed or not (`libclamav/cvd.c` `cli_tgzload`).
    fn add_container(&mut self, file: File, official: bool) -> io::Result<()> {
        let mut reader = BufReader::new(file);
        let mut header = [0u8; 512];
        reader.read_exact(&mut header)?;
        if !header.starts_with(b"ClamAV-VDB:") {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not a ClamAV database"));
        }
        let mut magic = [0u8; 2];
        let mut rest = reader;
        let n = read_up_to(&mut rest, &mut magic)?;
        let head = io::Cursor::new(magic[..n].to_vec());
        let tar: Box<dyn Read> = if magic[..n] == [0x1f, 0x8b] {
            Box::new(flate2::read::GzDecoder::new(head.chain(rest)))
        } else {
            Box::new(head.chain(rest))
        };
        self.add_tar(tar, official)
    }

    fn add_tar(&mut self, mut tar: impl Read, official: bool) -> io::Result<()> {
        let mut header = [0u8; 512];
        loop {
            if read_up_to(&mut tar, &mut header)? < 512 || header.iter().all(|&b| b == 0) {
                return Ok(());
            }
            let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
            let name = String::from_utf8_lossy(&header[..name_end]).into_owned();
            let size = parse_octal(&header[124..136]).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "a bad tar header in a database")
            })?;
            let padded = size.div_ceil(512) * 512;
            let ext = extension(&name);
            if is_hash_file(ext) && matches!(header[156], 0 | b'0') {
                let mut body = Vec::with_capacity(size as usize);
                (&mut tar).take(size).read_to_end(&mut body)?;
                io::copy(&mut (&mut tar).take(padded - size), &mut io::sink())?;
                self.add_file(ext, &String::from_utf8_lossy(&body), official);
            } else {
                io::copy(&mut (&mut tar).take(padded), &mut io::sink())?;
            }
        }
    }
}

fn extension(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(_, ext)| ext)
}

/// The database files whose entries are whole-file hashes (plus the name ignore list). `.hdu`
/// and `.hsu` are potentially-unwanted-application signatures clamd loads only with
/// `DetectPUA`, off by default.
fn is_hash_file(ext: &str) -> bool {
    matches!(ext, "hdb" | "hsb" | "fp" | "sfp" | "ign2")
}

/// Reads until `buf` is full or the reader ends; how many bytes came.
pub(crate) fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() { Some(0) } else { u64::from_str_radix(text, 8).ok() }
}

/// What identifies the state of a database directory: every file's name, size and mtime.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(dir: &Path) -> io::Result<Fingerprint> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        files.push((entry.path(), meta.len(), meta.modified().ok()));
    }
    files.sort();
    Ok(files)
}

/// The hash signatures of one database directory, reloaded when the directory changes.
#[derive(Debug)]
pub struct HashDb {
    dir: PathBuf,
    loaded: Mutex<Option<(Fingerprint, Arc<HashSignatures>)>>,
}

impl HashDb {
    /// The database in `dir`, loaded on first use.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into(), loaded: Mutex::new(None) }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The signatures as the directory holds them now (blocking: call from a blocking thread).
    pub fn current(&self) -> io::Result<Arc<HashSignatures>> {
        let print = fingerprint(&self.dir)?;
        {
            let loaded = self.loaded.lock().expect("hash db lock");
            if let Some((seen, db)) = loaded.as_ref()
                && *seen == print
            {
                return Ok(db.clone());
            }
        }
        let db = Arc::new(HashSignatures::load(&self.dir)?);
        *self.loaded.lock().expect("hash db lock") = Some((print, db.clone()));
        Ok(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn digests(data: &[u8]) -> FileDigests {
        FileDigests::compute(data, Needed { md5: true, sha1: true, sha256: true }).unwrap()
    }

    #[test]
    fn each_hash_kind_matches_by_size_and_digest() {
        let file = b"a file of some size".to_vec();
        let d = digests(&file);
        let size = file.len();
        let mut db = HashSignatures::default();
        db.add_file("hdb", &format!("{}:{size}:Md5-Sig\n", hex(&d.md5.unwrap())), false);
        assert_eq!(db.needed(size as u64), Needed { md5: true, ..Default::default() });
        assert_eq!(db.needed(size as u64 + 1), Needed::default());
        assert_eq!(db.find(size as u64, &d), Some("Md5-Sig.UNOFFICIAL"));
        assert_eq!(db.find(size as u64 + 1, &d), None, "another size is another file");

        let mut db = HashSignatures::default();
        db.add_file(
            "hsb",
            &format!(
                "# comment\n{}:{size}:Sha1-Sig\n{}:*:Sha256-Any-Size:73\n",
                hex(&d.sha1.unwrap()),
                hex(&d.sha256.unwrap())
            ),
            true,
        );
        assert_eq!(db.len(), 2);
        assert_eq!(db.needed(5), Needed { sha256: true, ..Default::default() });
        assert!(db.needed(size as u64).sha1);
        assert_eq!(db.find(size as u64, &d), Some("Sha1-Sig"));
        let only_sha256 = FileDigests { sha256: d.sha256, ..Default::default() };
        assert_eq!(db.find(size as u64, &only_sha256), Some("Sha256-Any-Size"));
        assert_eq!(db.find(size as u64, &FileDigests::default()), None);
    }

    #[test]
    fn the_allow_list_and_ignored_names_are_honoured() {
        let file = b"allowed".to_vec();
        let d = digests(&file);
        let line = format!("{}:{}:Sig\n", hex(&d.md5.unwrap()), file.len());
        let mut db = HashSignatures::default();
        db.add_file("hdb", &line, false);
        db.add_file("fp", &line, false);
        assert_eq!(db.find(file.len() as u64, &d), None);
        let mut db = HashSignatures::default();
        db.add_file("hdb", &line, false);
        db.add_file("ign2", "Sig\n", false);
        assert_eq!(db.find(file.len() as u64, &d), None);
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let mut db = HashSignatures::default();
        db.add_file(
            "hdb",
            "nothex:12:A\n0123:12:TooShort\n44d88612fea8a8f36de82e1278abb02f:x:B\n",
            false,
        );
        assert!(db.is_empty());
    }

    fn tar_entry(name: &str, body: &[u8]) -> Vec<u8> {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        let size = format!("{:011o}\0", body.len());
        header[124..136].copy_from_slice(size.as_bytes());
        header[156] = b'0';
        let mut out = header.to_vec();
        out.extend_from_slice(body);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    #[test]
    fn signatures_inside_cvd_and_cld_containers_are_read() {
        let d = digests(b"inside a container");
        let hsb = format!("{}:18:Container-Sig\n", hex(&d.sha256.unwrap()));
        let mut tar = tar_entry("COPYING", b"license text");
        tar.extend(tar_entry("daily.ndb", b"Ignored:0:*:4142\n"));
        tar.extend(tar_entry("daily.hsb", hsb.as_bytes()));
        tar.extend([0u8; 1024]);
        let mut header = b"ClamAV-VDB:03 Dec 2026 10-00 +0000:27000:1:90:x:x:ferry:0".to_vec();
        header.resize(512, b' ');

        let dir = tempfile_dir();
        // A .cvd is gzip-compressed; a .cld is not.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let cvd = [header.clone(), gz.finish().unwrap()].concat();
        std::fs::write(dir.join("daily.cvd"), cvd).unwrap();
        let db = HashSignatures::load(&dir).unwrap();
        assert_eq!(db.len(), 1);
        assert_eq!(db.find(18, &d), Some("Container-Sig"), "official: no .UNOFFICIAL");

        std::fs::remove_file(dir.join("daily.cvd")).unwrap();
        std::fs::write(dir.join("daily.cld"), [header, tar].concat()).unwrap();
        let hashdb = HashDb::new(&dir);
        assert_eq!(hashdb.current().unwrap().find(18, &d), Some("Container-Sig"));
        // A new file in the directory is picked up.
        std::fs::write(dir.join("local.hdb"), format!("{}:18:Local\n", hex(&d.md5.unwrap())))
            .unwrap();
        assert_eq!(hashdb.current().unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "ferry-hashdb-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_projects_test_database_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clamd/db");
        let db = HashSignatures::load(&dir).unwrap();
        // EICAR's MD5 (68 bytes), from ferry-test.hdb.
        let eicar_md5 = parse_hex("44d88612fea8a8f36de82e1278abb02f").unwrap();
        let d = FileDigests { md5: Some(eicar_md5.try_into().unwrap()), ..Default::default() };
        assert_eq!(db.find(68, &d), Some("Eicar-Test-Signature-HDB.UNOFFICIAL"));
    }
}
