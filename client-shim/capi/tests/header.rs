//! The checked-in C header matches the C ABI in `src/ffi/`.

#[path = "../examples/gen-header.rs"]
mod gen_header;

#[test]
fn header_is_up_to_date() {
    let generated = gen_header::generate(&gen_header::crate_dir());
    let path = gen_header::header_path();
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "{} is stale: run: cargo run -p vsmmu-capi --example gen-header",
        path.display()
    );
}

#[test]
fn header_declares_the_whole_abi() {
    let h = gen_header::generate(&gen_header::crate_dir());
    for decl in [
        "#ifndef VSMMU_H",
        "#include <stdbool.h>",
        "#include <stdint.h>",
        "#include <stddef.h>",
        "struct vsmmu_client;",
        "struct vsmmu_client *vsmmu_connect(const char *socket_path);",
        "const char *const *extra_args);",
        "const char *vsmmu_last_error(void);",
        "int vsmmu_last_errno(void);",
        "int vsmmu_dma_map(struct vsmmu_client *c, int fd, uint64_t offset, uint64_t iova, uint64_t size);",
        "int vsmmu_dma_unmap(struct vsmmu_client *c, uint64_t iova, uint64_t size);",
        "int vsmmu_mmio_read(struct vsmmu_client *c, uint64_t offset, unsigned int size, uint64_t *value);",
        "int vsmmu_set_irq(struct vsmmu_client *c, unsigned int index, int eventfd);",
        "int vsmmu_reset(struct vsmmu_client *c);",
        "int vsmmu_detach_device(struct vsmmu_client *c, uint32_t vsid);",
        "int vsmmu_get_stats(struct vsmmu_client *c, char *buf, size_t len);",
        "int vsmmu_server_alive(struct vsmmu_client *c);",
        "int vsmmu_server_pid(struct vsmmu_client *c);",
        "int vsmmu_socket_fd(struct vsmmu_client *c);",
        "void vsmmu_close(struct vsmmu_client *c);",
        "int vsmmu_save_state(struct vsmmu_client *c, uint8_t **data, size_t *len);",
        "void vsmmu_free_state(uint8_t *data, size_t len);",
        "int vsmmu_load_state(struct vsmmu_client *c, const uint8_t *data, size_t len);",
        "int vsmmu_resume(struct vsmmu_client *c);",
    ] {
        assert!(h.contains(decl), "header lacks {decl:?}:\n{h}");
    }
}
