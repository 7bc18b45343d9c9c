//! The daemon's only `unsafe` code: the few C calls that `rustix` does not
//! wrap (`getifaddrs`, glibc's `mallopt`). Everything else reaches the kernel
//! through `rustix` or `std`; `#![deny(unsafe_code)]` at the crate root keeps
//! it that way, and this module alone is allowed.

use std::net::IpAddr;

/// One address of a local interface, raw from `getifaddrs(3)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    pub name: String,
    /// `IFF_*` flags of the interface.
    pub flags: u32,
    pub address: IpAddr,
    /// The netmask, when the kernel gave one in the address's family.
    pub netmask: Option<IpAddr>,
}

/// Every IPv4/IPv6 address of every interface, in the kernel's order; an
/// error gives an empty list. `crate::net::interface_addresses` is the
/// caller everyone else goes through.
pub fn getifaddrs() -> Vec<IfAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we own until freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a non-null sockaddr whose family says which type it is.
        let Some(address) = (unsafe { sockaddr_ip(ifa.ifa_addr) }) else {
            continue;
        };
        let netmask = if ifa.ifa_netmask.is_null() {
            None
        } else {
            // SAFETY: a non-null netmask is a sockaddr of the family it names.
            unsafe { sockaddr_ip(ifa.ifa_netmask) }
        };
        // SAFETY: ifa_name is a non-null NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        out.push(IfAddr {
            name,
            flags: ifa.ifa_flags,
            address,
            netmask,
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// # Safety
/// `sa` must point to a valid sockaddr of the family it names.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    // SAFETY: the caller vouches for `sa`; the family selects the type, and
    // sockaddr_in / sockaddr_in6 are what the kernel wrote for AF_INET / AF_INET6.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

/// Makes glibc return large blocks (argon2's 19 MiB work areas) to the OS
/// when they are freed: `M_MMAP_THRESHOLD` fixed at 1 MiB instead of
/// glibc's adaptive one. A no-op off glibc.
pub fn mmap_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator and is thread-safe in glibc;
    // M_MMAP_THRESHOLD with a value within its range has no other effect.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

/// Hands the heap's free pages back to the OS (glibc's `malloc_trim`), once
/// start-up garbage such as the OpenAPI document's build is freed, so the
/// idle resident set is what the daemon uses. A no-op off glibc.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; it takes
    // the allocator's own locks and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_with_its_mask() {
        let lo = getifaddrs()
            .into_iter()
            .find(|a| a.address == IpAddr::from([127, 0, 0, 1]))
            .expect("127.0.0.1 on some interface");
        assert_eq!(lo.netmask, Some(IpAddr::from([255, 0, 0, 0])));
        assert!(lo.flags & libc::IFF_LOOPBACK as u32 != 0);
    }
}
