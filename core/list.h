/* Intrusive singly linked FIFOs: a head and a tail pointer, the link inside the node. */
#ifndef SHMNET_CORE_LIST_H
#define SHMNET_CORE_LIST_H

#include <stddef.h>

/* Append node to the FIFO (head, tail) whose nodes link through field `link`. */
#define FIFO_APPEND(head, tail, node, link)                                                        \
    do {                                                                                           \
        (node)->link = NULL;                                                                       \
        if (tail)                                                                                  \
            (tail)->link = (node);                                                                 \
        else                                                                                       \
            (head) = (node);                                                                       \
        (tail) = (node);                                                                           \
    } while (0)

#endif
