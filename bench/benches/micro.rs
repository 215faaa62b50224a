//! Microbenchmarks of the decoders on the hot paths: the vfio-user header
//! and request (every MMIO access), the vEVENTQ record walk (every host
//! event) and the SMMUv3 command decode (every guest command).
//!
//! `cargo bench -p vsmmu-bench --bench micro`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vsmmu_protocol::iommufd::{parse_vevents, Vevent};
use vsmmu_protocol::smmu::command::{Command, TlbiRange};
use vsmmu_protocol::smmu::regs::{CMDQ_PROD, IDR0};
use vsmmu_protocol::vfio_user::{self as vu, Header, Message, RegionAccess, Request, HEADER_SIZE};

/// A REGION_READ of IDR0 (32 bytes) and a posted REGION_WRITE of
/// CMDQ_PROD (36 bytes), as the client sends them.
fn mmio_messages() -> (Vec<u8>, Vec<u8>) {
    let read = Message::command(7, vu::Command::RegionRead)
        .push(&RegionAccess {
            offset: IDR0,
            region: 0,
            count: 4,
        })
        .finish();
    let write = Message::command(8, vu::Command::RegionWrite)
        .push(&RegionAccess {
            offset: CMDQ_PROD,
            region: 0,
            count: 4,
        })
        .bytes(&64u32.to_le_bytes())
        .no_reply()
        .finish();
    (read, write)
}

fn vfio_user(c: &mut Criterion) {
    let (read, write) = mmio_messages();
    let mut g = c.benchmark_group("vfio_user");
    g.throughput(Throughput::Elements(1));
    g.bench_function("header_decode", |b| {
        b.iter(|| Header::decode(black_box(&read)).map(|h| h.msg_size))
    });
    g.bench_function("region_read_decode", |b| {
        b.iter(|| {
            let bytes = black_box(&read);
            let h = Header::decode(bytes).ok()?;
            h.validate_command(1 << 20).ok()?;
            match Request::decode(&h, &bytes[HEADER_SIZE..]).ok()? {
                Request::RegionRead(a) => Some(a.offset),
                _ => None,
            }
        })
    });
    g.bench_function("region_write_decode", |b| {
        b.iter(|| {
            let bytes = black_box(&write);
            let h = Header::decode(bytes).ok()?;
            h.validate_command(1 << 20).ok()?;
            match Request::decode(&h, &bytes[HEADER_SIZE..]).ok()? {
                Request::RegionWrite { access, data } => Some(access.offset + data.len() as u64),
                _ => None,
            }
        })
    });
    g.finish();
}

/// `n` vEVENTQ records as the kernel's read returns them: 40-byte events,
/// then a header-only LOST record.
fn vevent_buffer(n: u32) -> Vec<u8> {
    let mut buf = Vec::with_capacity(n as usize * 40 + 8);
    for seq in 0..n {
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&seq.to_le_bytes());
        let iova = u64::from(seq) << 12;
        for w in [5u64 << 32 | 0x10, 1 << 35, iova, iova] {
            buf.extend_from_slice(&w.to_le_bytes());
        }
    }
    buf.extend_from_slice(&1u32.to_le_bytes());
    buf.extend_from_slice(&(n + 3).to_le_bytes());
    buf
}

fn vevents(c: &mut Criterion) {
    let mut g = c.benchmark_group("veventq");
    for n in [1u32, 1638] {
        let buf = vevent_buffer(n);
        g.throughput(Throughput::Elements(u64::from(n) + 1));
        g.bench_function(format!("parse_{n}_records"), |b| {
            b.iter(|| {
                let mut events = 0u32;
                let mut lost = 0u32;
                for v in parse_vevents(black_box(&buf)) {
                    match v {
                        Ok(Vevent::Event { seq, .. }) => events = events.wrapping_add(seq),
                        Ok(Vevent::Lost { seq }) => lost = seq,
                        Err(_) => break,
                    }
                }
                (events, lost)
            })
        });
    }
    g.finish();
}

fn commands(c: &mut Criterion) {
    // Linux's batch: 64 TLBI_NH_VA then a CMD_SYNC.
    let mut words: Vec<[u64; 2]> = (0..64u64)
        .map(|i| {
            Command::TlbiNhVa {
                vmid: 0,
                asid: 1,
                range: TlbiRange::va(i << 12, true),
            }
            .encode()
        })
        .collect();
    words.push(Command::sync_sev().encode());
    let mut g = c.benchmark_group("smmu_command");
    g.throughput(Throughput::Elements(words.len() as u64));
    g.bench_function("decode_batch_of_65", |b| {
        b.iter(|| {
            black_box(&words)
                .iter()
                .filter(|w| Command::decode(**w).is_ok_and(|c| c.is_host_invalidation()))
                .count()
        })
    });
    g.finish();
}

criterion_group!(micro, vfio_user, vevents, commands);
criterion_main!(micro);
